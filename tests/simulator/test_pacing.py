"""The per-event shortcuts give the same bytes as the plain way (frames, stamps, the obfuscation
pool), and the shared clock groups writes."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time

import pytest

from simulator.builders import TOKEN, Step
from simulator.pacing import (
    CLOCK_TICK_S,
    Pacing,
    SharedClock,
    encode_data_only,
    encode_sse,
    play,
    stamp_suffix,
    to_json,
    wall_clock_us,
)
from simulator.request import parse_request
from simulator.scenarios import SCENARIOS, build_events, get_scenario, pacing_for, plan_response
from simulator.text import OBFUSCATION_ALPHABET, random_letters

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


@pytest.mark.parametrize("model", [s.id for s in SCENARIOS if s.outcome != "http_error"])
def test_the_frames_the_builder_writes_with_its_text_deltas_are_what_the_json_encoder_writes(model):
    bodies = (*BODIES, {"input": "100% sure: %d %s %%", "metadata": {"sim_tokens": "300"}})
    for body in bodies:
        plan = plan_response(parse_request({**body, "metadata": {**body.get("metadata", {}), "sim_seed": "f"}},
                                           model=model))
        steps = list(plan.steps)
        for step in steps:
            if step.frame:
                assert step.frame == plain_sse(step.event)
        if model == "sim-text":  # every delta of a plain text carries its frame
            assert sum(bool(step.frame) for step in steps) == sum(
                step.event["type"] == "response.output_text.delta" for step in steps) > 0


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
        for now_us, now in ((1796003248043928, 1796003248.043928), (1796003248500000, 1796003248.5),
                            (1796003248000010, 1796003248.00001), (1796003248000000, 1796003248.0),
                            (1000000, 1.0)):
            assert encode(event)[:-3] + stamp_suffix(now_us) == encode({**event, "sim_stamp": now})


def test_the_stamp_is_the_wall_clock_to_the_microsecond():
    before = time.time()
    now_us = wall_clock_us()
    after = time.time()
    assert before - 1e-6 <= now_us / 1e6 <= after + 1e-6
    assert json.loads(b"{" + stamp_suffix(now_us)[1:-2]) == {"sim_stamp": round(now_us / 1e6, 6)}


def test_waiters_in_one_tick_share_one_timer_and_a_cancelled_one_leaves_the_rest():
    async def scenario() -> list[bool]:
        loop = asyncio.get_running_loop()
        clock = SharedClock(loop)
        soon = math.ceil(loop.time() / CLOCK_TICK_S) * CLOCK_TICK_S + CLOCK_TICK_S / 2
        first, second, third = (clock.wake_at(soon) for _ in range(3))
        assert len(clock.waiting) == 1
        second.cancel()
        await first
        await third
        return [first.done(), second.cancelled(), third.done(), not clock.waiting]

    assert asyncio.run(scenario()) == [True, True, True, True]


def deltas(count: int) -> list[Step]:
    return [Step({"type": "response.output_text.delta", "sequence_number": n, "delta": "x"}, TOKEN)
            for n in range(count)]


def play_out(steps: list[Step], pacing: Pacing) -> list[list[int]]:
    async def batches() -> list[list[int]]:
        return [[event["sequence_number"] for event, _frame in batch] async for batch in play(steps, pacing)]

    return asyncio.run(batches())


def test_a_stream_writes_at_most_once_per_interval():
    # 200 tokens/s for 12 tokens (60 ms); one write per 1 s at most: the first token(s) go out when
    # due, the rest (due within the interval) together at its end.
    pacing = Pacing(tokens_per_s=200, first_token_ms=0, jitter=0, seed="", write_interval_s=1.0)
    got = play_out(deltas(12), pacing)
    assert [n for batch in got for n in batch] == list(range(12))
    assert len(got) <= 2


def test_without_an_interval_every_frame_keeps_its_own_time():
    pacing = Pacing(tokens_per_s=20, first_token_ms=0, jitter=0, seed="", write_interval_s=0)
    got = play_out(deltas(4), pacing)
    assert [n for batch in got for n in batch] == list(range(4))


def interval_for(metadata: dict) -> float:
    request = parse_request({"model": "sim-text", "input": "hi", "stream": True, "metadata": metadata})
    return pacing_for(request, get_scenario("sim-text")).write_interval_s


def test_every_frame_keeps_its_own_time_unless_a_load_generator_asks(settings):
    settings.STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS = 0
    assert interval_for({}) == 0  # the dashboard's runs see the true token gaps
    assert interval_for({"sim_write_interval_ms": "100"}) == pytest.approx(0.1)
    settings.STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS = 100  # a load-generator process
    assert interval_for({}) == pytest.approx(0.1)
    assert interval_for({"sim_write_interval_ms": "0"}) == 0


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


def test_the_obfuscation_pool_draws_what_choice_would_and_leaves_the_same_state():
    for seed in range(50):
        plain, quick = random.Random(seed), random.Random(seed)
        assert random_letters(quick, 512) == "".join(plain.choice(OBFUSCATION_ALPHABET) for _ in range(512))
        assert quick.random() == plain.random()
