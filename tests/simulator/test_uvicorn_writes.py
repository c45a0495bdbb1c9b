"""On uvicorn (httptools) a plain stream's chunks go straight to the connection's transport, framed as
uvicorn frames them; while uvicorn has paused writing (a client that does not read) they go through
its ``send``, which waits, and the client still gets every byte once, in order. Each test serving
over a real uvicorn runs on asyncio's loop and on uvloop's (what ``python -m simulator.serve`` takes
where uvloop is installed), whose transports are another implementation."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvicorn
from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

from simulator.builders import Step
from simulator.pacing import Pacing, encode_sse, stamp_suffix
from simulator.playback import DirectBody, Playback, stamped_chunk, write_paced
from simulator.request import parse_request
from simulator.scenarios import build_events, plan_response
from tests.support.servers import chunked

LOOPS = ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"))]

REQUEST = {"model": "sim-text", "input": "hi", "stream": True,
           "metadata": {"sim_seed": "u", "sim_first_token_ms": "0", "sim_jitter": "0"}}


def knobs(tokens: int, rate: str) -> dict:
    return {**REQUEST, "metadata": {**REQUEST["metadata"], "sim_tokens": str(tokens), "sim_tokens_per_s": rate}}


async def serve_one(playback: Playback, read_after_s: float = 0.0) -> tuple[bytes, list[dict]]:
    """Serve one request with ``playback`` on a real uvicorn server; the raw response and the messages
    that went through uvicorn's ``send``. The client starts reading after ``read_after_s``."""
    through_send: list[dict] = []
    original_send = RequestResponseCycle.send

    async def counting_send(self: RequestResponseCycle, message: dict) -> None:
        through_send.append(message)
        await original_send(self, message)

    async def app(scope: dict, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream; charset=utf-8")]})
        await write_paced(playback, send)
        await send({"type": "http.response.body"})

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, http="httptools", lifespan="off", log_level="warning"))
    RequestResponseCycle.send = counting_send  # type: ignore[method-assign]
    try:
        serving = asyncio.ensure_future(server.serve(sockets=[listener]))
        while not server.started:
            await asyncio.sleep(0.01)
        client = socket.create_connection(("127.0.0.1", port))
        client.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_sendall(client, b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        await asyncio.sleep(read_after_s)
        received = bytearray()
        while data := await loop.sock_recv(client, 65536):
            received += data
        client.close()
        server.should_exit = True
        await serving
    finally:
        RequestResponseCycle.send = original_send  # type: ignore[method-assign]
    return bytes(received), through_send


@pytest.fixture(params=LOOPS)
def run(request) -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Runs a coroutine to its end on a new loop of the kind the test is parametrized with."""
    if request.param == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    else:
        factory = asyncio.SelectorEventLoop

    def run_on_loop(coroutine: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            assert type(runner.get_loop()).__module__.split(".")[0] == request.param
            return runner.run(coroutine)

    return run_on_loop


def test_paced_chunks_are_written_straight_to_the_transport(run):
    plan = plan_response(parse_request(knobs(20, "200")))
    raw, through_send = run(serve_one(Playback(plan.steps, plan.pacing, encode_sse)))
    head, body = raw.split(b"\r\n\r\n", 1)
    assert b"transfer-encoding: chunked" in head.lower()
    chunks = chunked(body)
    assert b"".join(chunks) == b"".join(encode_sse(e) for e in build_events("sim-text", knobs(20, "200")))
    assert len(chunks) > 10 and all(chunk.endswith(b"\n\n") for chunk in chunks[:-1])
    # Only the start and the end went through uvicorn's send: every chunk between went straight out.
    assert [m["type"] for m in through_send] == ["http.response.start", "http.response.body"]


def test_while_writing_is_paused_chunks_go_through_send_and_arrive_whole(run):
    events = build_events("sim-text", knobs(40_000, "max"))  # ~11 MB, far more than the socket buffers hold
    plan = plan_response(parse_request(knobs(40_000, "max")))
    raw, through_send = run(serve_one(Playback(plan.steps, plan.pacing, encode_sse), read_after_s=0.3))
    body = raw.split(b"\r\n\r\n", 1)[1]
    assert b"".join(chunked(body)) == b"".join(encode_sse(e) for e in events)
    assert len(through_send) > 2  # the client did not read for 0.3 s: uvicorn paused writing


def test_other_servers_sends_are_awaited_as_they_are():
    async def send(message: dict) -> None:
        pass

    assert DirectBody.of(send) is None
    sent: list[dict] = []

    async def record(message: dict) -> None:
        sent.append(message)

    events = build_events("sim-text", knobs(3, "max"))
    asyncio.run(write_paced(Playback([Step(e) for e in events], Pacing.unthrottled_pacing(), encode_sse), record))
    assert b"".join(m["body"] for m in sent) == b"".join(encode_sse(e) for e in events)


def test_a_uvicorn_whose_request_state_is_not_as_expected_gets_its_send_awaited():
    cycle = object.__new__(RequestResponseCycle)  # none of the attributes a direct write reads
    assert DirectBody.of(RequestResponseCycle.send.__get__(cycle)) is None


@pytest.fixture(autouse=True)
def _no_leftover_patch():
    original = RequestResponseCycle.send
    yield
    assert RequestResponseCycle.send is original


def test_stamped_chunks_written_straight_out_carry_the_time_they_were_written(run):
    body = {**knobs(30, "200"), "metadata": {**knobs(30, "200")["metadata"], "sim_stamp": "1"}}
    plan = plan_response(parse_request(body))
    before = time.time()
    raw, through_send = run(serve_one(Playback(plan.steps, plan.pacing, encode_sse)))
    after = time.time()
    frames = [frame + b"\n\n" for chunk in chunked(raw.split(b"\r\n\r\n", 1)[1]) for frame in chunk.split(b"\n\n")
              if frame]
    events = build_events("sim-text", body)
    assert len(frames) == len(events)
    for frame, event in zip(frames, events, strict=True):
        data = json.loads(frame.split(b"data: ", 1)[1])
        assert before <= data.pop("sim_stamp") <= after
        assert encode_sse(data) == encode_sse(event)
        head, _, stamp = frame.rpartition(b',"sim_stamp":')
        assert head + b"}\n\n" == encode_sse(event)  # the stamp only appended: the rest byte for byte
    assert [m["type"] for m in through_send] == ["http.response.start", "http.response.body"]


def test_a_stamped_chunk_is_the_chunk_of_the_stamped_frame():
    frame = encode_sse(build_events("sim-text", knobs(3, "max"))[4])
    for now_us in (1796003248043921, 1796003248043920, 1796003248000000, 1796003248000001, 1796003248999999,
                   999999999999999, 10_000_000_000_000_001, 1_000_001, 1):
        stamped_frame = frame[:-3] + stamp_suffix(now_us)
        assert stamped_chunk(frame, now_us) == b"%x\r\n%s\r\n" % (len(stamped_frame), stamped_frame)
