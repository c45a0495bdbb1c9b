"""A plain stream written from the shared clock (simulator.playback) sends the bytes play() would, one
write per frame due at its own time, finishes a send that has to wait, and stops when the client
leaves."""

from __future__ import annotations

import asyncio
import json

from simulator.builders import Step
from simulator.pacing import Pacing, encode_data_only, encode_sse
from simulator.playback import Playback, write_paced
from simulator.request import parse_request
from simulator.scenarios import build_events, plan_response

REQUEST = {"model": "sim-text", "input": "hi", "stream": True,
           "metadata": {"sim_seed": "p", "sim_tokens": "12", "sim_first_token_ms": "0", "sim_jitter": "0"}}


def playback(rate: str, **fields) -> Playback:
    body = {**REQUEST, "metadata": {**REQUEST["metadata"], "sim_tokens_per_s": rate}}
    plan = plan_response(parse_request(body))
    return Playback(plan.steps, plan.pacing, encode_sse, **fields)


def expected(rate: str) -> bytes:
    body = {**REQUEST, "metadata": {**REQUEST["metadata"], "sim_tokens_per_s": rate}}
    return b"".join(encode_sse(event) for event in build_events("sim-text", body))


def bodies(sent: list[dict]) -> list[bytes]:
    assert all(m["type"] == "http.response.body" and m["more_body"] for m in sent)
    return [m["body"] for m in sent]


def test_the_frames_are_those_of_the_events_written_as_they_fall_due():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    asyncio.run(write_paced(playback("50"), send))  # a token every 20 ms
    assert b"".join(bodies(sent)) == expected("50")
    # The scaffold at once, then (unless the loop was held up) every delta alone; whole frames each time.
    assert len(sent) > 2 and all(body.endswith(b"\n\n") for body in bodies(sent))


def test_stamped_frames_carry_the_time_they_were_written():
    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    body = {**REQUEST, "metadata": {**REQUEST["metadata"], "sim_tokens_per_s": "max", "sim_stamp": "1"}}
    plan = plan_response(parse_request(body))
    asyncio.run(write_paced(Playback(plan.steps, plan.pacing, encode_sse), send))
    frames = b"".join(bodies(sent)).split(b"\n\n")[:-1]
    events = [json.loads(frame.split(b"data: ", 1)[1]) for frame in frames]
    assert all(event.pop("sim_stamp") > 1e9 for event in events)
    assert events == build_events("sim-text", body)


def test_a_send_that_has_to_wait_is_finished_by_the_task_and_the_stream_goes_on():
    sent: list[dict] = []

    async def run() -> None:
        writable = asyncio.Event()

        async def send(message: dict) -> None:  # the server paused writing after the second write
            if len(sent) == 2 and not writable.is_set():
                asyncio.get_running_loop().call_later(0.05, writable.set)
                await writable.wait()
            sent.append(message)

        await write_paced(playback("500"), send)

    asyncio.run(run())
    assert b"".join(bodies(sent)) == expected("500")


def test_a_client_that_leaves_stops_the_writes_and_closes_the_stream():
    sent: list[dict] = []
    closed: list[int] = []

    async def run() -> None:
        async def send(message: dict) -> None:
            sent.append(message)

        # 12 tokens at 10 per second: the stream would take 1.2 s.
        writing = asyncio.ensure_future(write_paced(playback("10", close=lambda: closed.append(len(sent))), send))
        await asyncio.sleep(0.05)
        writing.cancel()
        await asyncio.gather(writing, return_exceptions=True)
        await asyncio.sleep(0.05)  # nothing is written after it

    asyncio.run(run())
    assert 1 <= len(sent) < 13 and closed == [len(sent)]  # 13: the scaffold's write and one per delta


def test_recorded_batches_without_text_deltas_and_the_trailer_after_the_last_frame():
    sent: list[dict] = []
    recorded: list[int] = []

    async def send(message: dict) -> None:
        sent.append(message)

    events = build_events("sim-text", {**REQUEST, "metadata": {**REQUEST["metadata"], "sim_tokens_per_s": "max"}})
    steps = [Step(e) for e in events]
    pacing = Pacing.unthrottled_pacing()
    asyncio.run(write_paced(Playback(steps, pacing, encode_data_only, record=lambda batch: recorded.extend(
        event["sequence_number"] for event, _frame in batch), trailer=b"data: [DONE]\n\n"), send))
    # Text deltas change nothing a non-background stored response keeps: they are not recorded.
    assert recorded == [e["sequence_number"] for e in events if e["type"] != "response.output_text.delta"]
    assert len(recorded) < len(events)
    assert b"".join(bodies(sent)) == b"".join(encode_data_only(e) for e in events) + b"data: [DONE]\n\n"
