"""A client slower than its provider (dashboard/api/gateway.py, DirectRequest.send_chunk): the relay
waits while more than CLIENT_HIGH_WATER is unsent on the client's connection, so the provider is read
at the client's pace and the stream holds bounded memory; the client still gets every byte."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from dashboard.api import gateway
from tests.support.servers import app_with_alice, chunked, start_daphne, start_simulator, stop_process

MIB = 1024 * 1024


def fake_transport(unsent: int) -> SimpleNamespace:
    return SimpleNamespace(dataBuffer=b"x" * unsent, offset=0, _tempDataLen=0, connected=True)


def direct_request(transport) -> gateway.DirectRequest:
    async def send(message):
        pass

    request = gateway.DirectRequest({"type": "http", "path": "/gateway/simulator/v1/responses"}, None, send,
                                    "simulator", "responses", {}, False)
    request.transport = transport
    return request


async def test_the_relay_waits_while_the_client_is_far_behind_and_goes_on_once_it_catches_up(monkeypatch):
    monkeypatch.setattr(gateway, "CLIENT_DRAIN_POLL_S", 0.001)
    transport = fake_transport(gateway.CLIENT_HIGH_WATER + 1)
    sending = asyncio.ensure_future(direct_request(transport).send_chunk(b"data: {}\n\n"))
    await asyncio.sleep(0.05)
    assert not sending.done()
    transport.dataBuffer = b"x" * (gateway.CLIENT_LOW_WATER + 1)  # draining, still above the low mark
    await asyncio.sleep(0.05)
    assert not sending.done()
    transport.dataBuffer = b"x" * gateway.CLIENT_LOW_WATER
    await asyncio.wait_for(sending, 5)


async def test_a_client_within_the_high_mark_or_gone_is_not_waited_for():
    await asyncio.wait_for(direct_request(fake_transport(gateway.CLIENT_HIGH_WATER)).send_chunk(b"x"), 1)
    gone = fake_transport(gateway.CLIENT_HIGH_WATER * 2)
    gone.connected = False
    await asyncio.wait_for(direct_request(gone).send_chunk(b"x"), 1)
    await asyncio.wait_for(direct_request(None).send_chunk(b"x"), 1)  # not Daphne: nothing to look at


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[tuple[str, str, int]]:
    var_dir = tmp_path_factory.mktemp("slow-client")
    token = app_with_alice(var_dir, "slow client")
    # The provider in a process of its own (uvicorn, which waits for a slow reader): the built-in one
    # answers from the gateway's own Daphne, whose memory would then hold what the leg does not read.
    simulator, sim_base = start_simulator(var_dir)
    process, base_url = start_daphne(var_dir, {"STREAMSCOPE_SIMULATOR_URL": sim_base + "/sim/v1"})
    try:
        yield base_url, token, process.pid
    finally:
        stop_process(process)
        stop_process(simulator)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.server
def test_a_client_that_stops_reading_holds_the_server_to_bounded_memory_and_then_gets_every_event(app):
    base_url, token, pid = app
    host, port = base_url.removeprefix("http://").split(":")
    events = 150_000  # ~46 MB unthrottled: far past what is held for a client, the sockets' buffers included
    body = json.dumps({"model": "sim-text", "input": "slow", "stream": True,
                       "metadata": {"sim_tokens": str(events - 8), "sim_tokens_per_s": "max"}}).encode()
    before = rss_bytes(pid)
    with socket.create_connection((host, int(port))) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.sendall(b"POST /gateway/simulator/v1/responses HTTP/1.1\r\nHost: " + host.encode()
                     + b"\r\nAuthorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
                     + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = sock.recv(4096)
        assert got.startswith(b"HTTP/1.1 200")
        time.sleep(3)  # reading nothing meanwhile: unpaced, the whole stream would now be in the server
        grown = rss_bytes(pid) - before
        sock.settimeout(60)
        while not got.endswith(b"\r\n0\r\n\r\n"):
            piece = sock.recv(1 << 20)
            assert piece, "the server closed the connection before the end"
            got += piece
    assert grown < 30 * MIB, f"the server grew {grown / MIB:.0f} MiB while its client read nothing"
    stream = b"".join(chunked(got.split(b"\r\n\r\n", 1)[1]))
    frames = stream.split(b"\n\n")
    assert frames.pop() == b""
    assert len(frames) == events and all(frame.startswith(b"event: ") for frame in frames)
    assert [json.loads(frame.split(b"\ndata: ", 1)[1])["sequence_number"] for frame in frames] == list(range(events))
    assert frames[-1].startswith(b"event: response.completed\n")
