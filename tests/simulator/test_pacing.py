"""Pacing's shortcuts give the same bytes as the plain way, and the shared clock groups writes."""

from __future__ import annotations

import asyncio
import json

import pytest

from simulator.builders import TOKEN, Step
from simulator.pacing import (
    Pacing,
    SharedClock,
    encode_data_only,
    encode_sse,
    play,
    stamped,
    to_json,
)
from simulator.scenarios import SCENARIOS, build_events

BODIES = (
    {"input": 'héllo "quoted" \u2028 ☃ \\ back\nslash </script>'},
    {"input": "x", "stream_options": {"include_obfuscation": False}},
    {"input": "y", "top_logprobs": 2},
)


def plain_sse(event: dict) -> bytes:
    return f"event: {event['type']}\ndata: {to_json(event)}\n\n".encode()


@pytest.mark.parametrize("model", [s.id for s in SCENARIOS if s.outcome != "http_error"])
def test_every_frame_is_what_the_json_encoder_writes(model):
    for body in BODIES:
        for event in build_events(model, body, seed="frames"):
            assert encode_sse(event) == plain_sse(event)


def test_a_text_delta_that_is_not_plain_is_encoded_the_plain_way():
    delta = {"type": "response.output_text.delta", "sequence_number": True, "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "logprobs": [], "delta": "hi", "obfuscation": "abc"}
    assert encode_sse(delta) == plain_sse(delta)
    assert b'"sequence_number":true' in encode_sse(delta)
    with_logprobs = {**delta, "sequence_number": 3, "logprobs": [{"token": "hi", "logprob": -0.5}]}
    assert encode_sse(with_logprobs) == plain_sse(with_logprobs)


@pytest.mark.parametrize("encode", [encode_sse, encode_data_only])
def test_a_stamp_is_spliced_in_as_encoding_it_would_write_it(encode):
    for event in build_events("sim-all-families", {"input": "stamp"}, seed="s")[:40]:
        for now in (1796003248.043928, 1796003248.5, 1.0):
            assert stamped(encode(event), now) == encode({**event, "sim_stamp": now})


def test_waiters_in_one_tick_share_one_timer_and_a_cancelled_one_leaves_the_rest():
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        clock = SharedClock(loop)
        soon = loop.time() + 0.01
        first, second, third = (clock.tick_after(soon, 0.05) for _ in range(3))
        assert len(clock.waiting) == 1
        second.cancel()
        await first
        await third
        return [first.done(), second.cancelled(), third.done(), not clock.waiting]

    assert asyncio.run(scenario()) == [True, True, True, True]


def test_frames_due_within_one_tick_go_out_in_one_write():
    steps = [Step({"type": "response.output_text.delta", "sequence_number": n, "delta": "x"}, TOKEN)
             for n in range(10)]
    # 200 tokens/s: all ten are due within 50 ms; the clock ticks every 200 ms.
    pacing = Pacing(tokens_per_s=200, first_token_ms=0, jitter=0, seed="", tick_s=0.2)

    async def batches() -> list[list[int]]:
        return [[event["sequence_number"] for event, _frame in batch] async for batch in play(steps, pacing)]

    got = asyncio.run(batches())
    assert [n for batch in got for n in batch] == list(range(10))
    assert len(got) <= 2  # a tick may fall inside those 50 ms, no more than one


def test_stamped_frames_carry_the_stamp_and_events_stay_as_built():
    steps = [Step({"type": "response.created", "sequence_number": 0})]
    pacing = Pacing.unthrottled_pacing()
    pacing = Pacing(**{**pacing.__dict__, "stamp": True})

    async def first() -> list:
        return [batch async for batch in play(steps, pacing)][0]

    [(event, frame)] = asyncio.run(first())
    assert event == {"type": "response.created", "sequence_number": 0}
    data = json.loads(frame.split(b"data: ", 1)[1])
    assert set(data) == {"type", "sequence_number", "sim_stamp"} and data["sim_stamp"] > 1e9
