"""A client slower than what it is sent (dashboard/pacing.py; the gateway's DirectRequest.send_chunk): the relay
waits while more than dashboard.pacing.HIGH_WATER is unsent on the client's connection, so the provider is read
at the client's pace and the stream holds bounded memory; the client still gets every byte."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from dashboard import pacing
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
    monkeypatch.setattr(pacing, "DRAIN_POLL_S", 0.001)
    transport = fake_transport(pacing.HIGH_WATER + 1)
    sending = asyncio.ensure_future(direct_request(transport).send_chunk(b"data: {}\n\n"))
    await asyncio.sleep(0.05)
    assert not sending.done()
    transport.dataBuffer = b"x" * (pacing.LOW_WATER + 1)  # draining, still above the low mark
    await asyncio.sleep(0.05)
    assert not sending.done()
    transport.dataBuffer = b"x" * pacing.LOW_WATER
    await asyncio.wait_for(sending, 5)


async def test_a_client_within_the_high_mark_or_gone_is_not_waited_for():
    await asyncio.wait_for(direct_request(fake_transport(pacing.HIGH_WATER)).send_chunk(b"x"), 1)
    gone = fake_transport(pacing.HIGH_WATER * 2)
    gone.connected = False
    await asyncio.wait_for(direct_request(gone).send_chunk(b"x"), 1)
    await asyncio.wait_for(direct_request(None).send_chunk(b"x"), 1)  # not Daphne: nothing to look at


@pytest.fixture(scope="module", params=["separate provider", "built-in simulator"])
def app(request, tmp_path_factory) -> Iterator[tuple[str, str, int, str]]:
    var_dir = tmp_path_factory.mktemp("slow-client")
    token = app_with_alice(var_dir, "slow client")
    if request.param == "built-in simulator":
        # `make run`'s default: the provider answers from the gateway's own Daphne, through Django
        # (dashboard.pacing.PacedResponses), so that Daphne would otherwise hold what the leg does not read.
        process, base_url = start_daphne(var_dir)
        simulator = None
    else:  # a provider in a process of its own (uvicorn, which waits for a slow reader, as real ones do)
        simulator, sim_base = start_simulator(var_dir)
        process, base_url = start_daphne(var_dir, {"STREAMSCOPE_SIMULATOR_URL": sim_base + "/sim/v1"})
    try:
        yield base_url, token, process.pid, request.param
    finally:
        stop_process(process)
        if simulator is not None:
            stop_process(simulator)


def gateway_stream(base_url: str, token: str, events: int) -> tuple[socket.socket, bytes]:
    """A raw client (a 64 KiB receive buffer) asking the gateway for an unthrottled stream of ``events``
    events: its socket and the first bytes read (the answer's head)."""
    host, port = base_url.removeprefix("http://").split(":")
    body = json.dumps({"model": "sim-text", "input": "slow", "stream": True,
                       "metadata": {"sim_tokens": str(events - 8), "sim_tokens_per_s": "max"}}).encode()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(b"POST /gateway/simulator/v1/responses HTTP/1.1\r\nHost: " + host.encode()
                 + b"\r\nAuthorization: Bearer " + token.encode() + b"\r\nContent-Type: application/json\r\n"
                 + b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    got = sock.recv(4096)
    assert got.startswith(b"HTTP/1.1 200")
    return sock, got


def builtin(app) -> bool:
    return app[3] == "built-in simulator"


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.server
def test_a_client_that_stops_reading_holds_the_server_to_bounded_memory_and_then_gets_every_event(app):
    base_url, token, pid, _ = app
    # Unthrottled, far past what is held for a client, the sockets' buffers included: ~46 MB, and ~92 MB
    # from the built-in simulator, whose own state for the stream and the far side's held bytes
    # (the leg's reads, paced the same way) are in the same process.
    events = 300_000 if builtin(app) else 150_000
    before = rss_bytes(pid)
    sock, got = gateway_stream(base_url, token, events)
    with sock:
        time.sleep(3)  # reading nothing meanwhile: unpaced, the whole stream would now be in the server
        grown = rss_bytes(pid) - before
        sock.settimeout(60)
        while not got.endswith(b"\r\n0\r\n\r\n"):
            piece = sock.recv(1 << 20)
            assert piece, "the server closed the connection before the end"
            got += piece
    bound = 60 * MIB if builtin(app) else 30 * MIB  # unpaced: ~80 and ~101 MiB (2026-11-30)
    assert grown < bound, f"the server grew {grown / MIB:.0f} MiB while its client read nothing"
    stream = b"".join(chunked(got.split(b"\r\n\r\n", 1)[1]))
    frames = stream.split(b"\n\n")
    assert frames.pop() == b""
    assert len(frames) == events and all(frame.startswith(b"event: ") for frame in frames)
    assert [json.loads(frame.split(b"\ndata: ", 1)[1])["sequence_number"] for frame in frames] == list(range(events))
    assert frames[-1].startswith(b"event: response.completed\n")


def daphne_send(transport) -> tuple[object, list[dict]]:
    """An ASGI send as Daphne's (``partial(server.handle_reply, protocol)``) over ``transport``."""
    import functools

    sent: list[dict] = []

    class Server:
        async def handle_reply(self, protocol, message):
            sent.append(message)

    return functools.partial(Server().handle_reply, SimpleNamespace(transport=transport)), sent


async def paced_response(transport, bodies: int) -> tuple[asyncio.Future, list[dict]]:
    """A Django-like app sending its head and ``bodies`` body chunks through PacedResponses."""
    send, sent = daphne_send(transport)

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for _ in range(bodies):
            await send({"type": "http.response.body", "body": b"x", "more_body": True})

    async def receive():
        return {"type": "http.request"}

    return asyncio.ensure_future(pacing.PacedResponses(app)({"type": "http", "path": "/sim/v1/responses"},
                                                            receive, send)), sent


async def test_a_django_response_waits_while_its_client_is_far_behind_and_goes_on_once_it_catches_up(monkeypatch):
    monkeypatch.setattr(pacing, "DRAIN_POLL_S", 0.001)
    transport = fake_transport(pacing.HIGH_WATER + 1)
    responding, sent = await paced_response(transport, 3)
    await asyncio.sleep(0.05)
    assert [m["type"] for m in sent] == ["http.response.start"]  # the head goes; the body waits
    transport.dataBuffer = b"x" * pacing.LOW_WATER
    await asyncio.wait_for(responding, 5)
    assert len(sent) == 4


async def test_a_django_response_lets_go_of_a_client_that_takes_nothing(monkeypatch, settings):
    monkeypatch.setattr(pacing, "DRAIN_POLL_S", 0.001)
    settings.STREAMSCOPE_STALL_TIMEOUT_S = 0.05
    transport = fake_transport(pacing.HIGH_WATER + 1)
    aborted = []
    transport.abortConnection = lambda: aborted.append(True)
    responding, sent = await paced_response(transport, 3)
    await asyncio.wait_for(responding, 5)
    assert aborted == [True] and [m["type"] for m in sent] == ["http.response.start"]  # nothing more sent


async def test_paced_sends_keep_daphnes_connection_findable():
    # The gateway's direct path finds Daphne's transport behind the send it is given (send_at_once).
    from dashboard.twisted_shim import transport_of

    transport = fake_transport(0)
    send, _ = daphne_send(transport)
    found = []

    async def app(scope, receive, send):
        found.append(transport_of(send))

    await pacing.PacedResponses(app)({"type": "http", "path": "/"}, None, send)
    assert found == [transport]


async def test_the_deployments_own_simulator_calls_are_paced_but_never_let_go(monkeypatch, settings):
    # The gateway's leg to the built-in simulator reads only as fast as the gateway's client: a slow
    # but steady client must not have its provider's answer cut by the simulator's side giving up.
    from streams.upstream.providers import simulator_key

    monkeypatch.setattr(pacing, "DRAIN_POLL_S", 0.001)
    settings.STREAMSCOPE_STALL_TIMEOUT_S = 0.05
    own = [(b"authorization", b"Bearer " + simulator_key().encode())]
    assert pacing._own_simulator_call({"path": "/sim/v1/responses", "headers": own})
    assert not pacing._own_simulator_call({"path": "/sim/v1/responses", "headers": [(b"authorization", b"Bearer x")]})
    assert not pacing._own_simulator_call({"path": "/api/runs/", "headers": own})
    transport = fake_transport(pacing.HIGH_WATER + 1)
    transport.abortConnection = lambda: pytest.fail("the deployment's own call was let go")
    send, sent = daphne_send(transport)

    async def app(scope, receive, send):
        await send({"type": "http.response.body", "body": b"x", "more_body": True})

    responding = asyncio.ensure_future(pacing.PacedResponses(app)({"type": "http", "path": "/sim/v1/responses",
                                                                    "headers": own}, None, send))
    await asyncio.sleep(0.3)  # six stall timeouts
    assert not responding.done() and sent == []
    transport.dataBuffer = b""
    await asyncio.wait_for(responding, 5)
    assert len(sent) == 1


@pytest.mark.server
def test_a_slow_but_steady_client_gets_the_whole_stream_of_the_built_in_simulator(tmp_path):
    # Review, 2026-11-30: with PacedResponses letting go of the simulator's answer to the gateway's own
    # leg after the stall timeout, such a client's stream was cut at ~59,850 of 150,000 events.
    token = app_with_alice(tmp_path, "slow steady")
    process, base_url = start_daphne(tmp_path, {"STREAMSCOPE_STALL_TIMEOUT_S": "3"})
    try:
        events = 150_000
        sock, got = gateway_stream(base_url, token, events)
        with sock:
            sock.settimeout(60)
            began = time.monotonic()
            while time.monotonic() - began < 12:  # 1 MiB every 1.5 s: never 3 s without taking bytes
                want = len(got) + MIB
                while len(got) < want:
                    got += sock.recv(MIB)
                time.sleep(1.5)
            while not got.endswith(b"\r\n0\r\n\r\n"):
                piece = sock.recv(MIB)
                if not piece:
                    break
                got += piece
    finally:
        stop_process(process)
    stream = b"".join(chunked(got.split(b"\r\n\r\n", 1)[1]))
    assert stream.count(b"\n\n") == events, "the stream ended early"


async def test_a_client_taking_bytes_from_the_sockets_queue_is_not_let_go(monkeypatch, settings):
    # Twisted's buffer shrinks only when the kernel takes more; a steady slow reader empties the
    # socket's send queue meanwhile, and that is progress too (review, 2026-11-30).
    monkeypatch.setattr(pacing, "DRAIN_POLL_S", 0.001)
    settings.STREAMSCOPE_STALL_TIMEOUT_S = 0.05
    transport = fake_transport(pacing.HIGH_WATER + 1)
    transport.abortConnection = lambda: pytest.fail("a client still reading was let go")
    queue = [4 * MIB]

    def reading(t):
        queue[0] -= 1024  # the client takes 1 KiB between two looks
        return queue[0]

    monkeypatch.setattr(pacing, "kernel_queued", reading)
    waiting = asyncio.ensure_future(direct_request(transport).send_chunk(b"x"))
    await asyncio.sleep(0.3)  # six stall timeouts with Twisted's buffer unchanged
    assert not waiting.done()
    transport.dataBuffer = b""
    await asyncio.wait_for(waiting, 5)


def test_the_sockets_queue_is_what_the_peer_has_not_acknowledged():
    with socket.create_server(("127.0.0.1", 0)) as server:
        sender = socket.create_connection(server.getsockname())
        receiver, _ = server.accept()
        with sender, receiver:
            sender.setblocking(False)
            sent = 0
            with contextlib.suppress(BlockingIOError):
                while sent < 64 * MIB:  # until the peer's buffer and the socket's queue are full
                    sent += sender.send(b"x" * 65536)
            transport = SimpleNamespace(socket=sender)
            held = pacing.kernel_queued(transport)
            assert 0 < held <= sent
            receiver.settimeout(10)
            taken = 0
            while taken < sent:
                taken += len(receiver.recv(1 << 20))
            for _ in range(100):  # the last acknowledgement, a moment after
                if pacing.kernel_queued(transport) == 0:
                    break
                time.sleep(0.01)
            assert pacing.kernel_queued(transport) == 0
    assert pacing.kernel_queued(SimpleNamespace()) == 0  # no socket to ask
