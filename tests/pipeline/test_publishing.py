"""Publishing rounds: batches of many runs go out together, per layer, without mixing up groups."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from channels.layers import get_channel_layer

from streams.pipeline import broadcast
from streams.pipeline.broadcast import GroupPublisher, group_name, publish_events
from tests.support.scaled import REDIS_URL, services_missing


class RecordingLayer:
    def __init__(self, many: bool, fail_group: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.fail_group = fail_group
        if many:
            self.group_send_many = self._many

    async def group_send(self, group, message):
        await asyncio.sleep(0)
        if group == self.fail_group:
            raise RuntimeError("full")
        self.calls.append([group])

    async def _many(self, items):
        await asyncio.sleep(0)
        self.calls.append([group for group, _ in items])


async def test_messages_that_arrive_while_a_send_is_in_flight_go_out_together():
    layer = RecordingLayer(many=True)
    publisher = GroupPublisher(layer)
    first = asyncio.ensure_future(publisher.send("g0", {"type": "x"}))
    for _ in range(3):  # until g0's send is in flight
        await asyncio.sleep(0)
    await asyncio.gather(first, *(publisher.send(f"g{i}", {"type": "x"}) for i in range(1, 6)))
    # The first message went alone; the five that queued behind it, as one call.
    assert layer.calls == [["g0"], ["g1", "g2", "g3", "g4", "g5"]]


async def test_without_send_many_each_group_is_sent_and_a_failure_stays_with_its_message():
    layer = RecordingLayer(many=False, fail_group="g2")
    publisher = GroupPublisher(layer)
    results = await asyncio.gather(*(publisher.send(f"g{i}", {"type": "x"}) for i in range(4)),
                                   return_exceptions=True)
    assert [isinstance(r, RuntimeError) for r in results] == [False, False, True, False]
    assert sorted(g for call in layer.calls for g in call) == ["g0", "g1", "g3"]


async def test_the_in_memory_layer_receives_every_runs_batch_in_order():
    layer = get_channel_layer()
    channels = {}
    for run_id in (1, 2, 3):
        channels[run_id] = await layer.new_channel()
        await layer.group_add(group_name(run_id), channels[run_id])
    sends = [publish_events(run_id, first, [f'{{"seq":{first}}}']) for first in range(3) for run_id in (1, 2, 3)]
    for send in sends:  # one run's batches in order, different runs side by side
        await send
    for _run_id, channel in channels.items():
        firsts = [(await layer.receive(channel))["first"] for _ in range(3)]
        assert firsts == [0, 1, 2]


@pytest.mark.services
@pytest.mark.skipif(services_missing() is not None, reason=f"needs Redis: {services_missing()}")
async def test_the_redis_layer_publishes_a_round_in_one_pipeline_to_the_right_groups():
    from streams.pipeline.redis_layer import BatchPubSubChannelLayer

    layer = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=f"test-{uuid.uuid4().hex[:8]}")
    try:
        channels = {}
        for group in ("run.1", "run.2"):
            channels[group] = await layer.new_channel()
            await layer.group_add(group, channels[group])
        await layer.group_send_many([("run.1", {"type": "run.events", "first": 0}),
                                     ("run.2", {"type": "run.events", "first": 7}),
                                     ("run.1", {"type": "run.events", "first": 1})])
        got = {}
        for group, channel in channels.items():
            count = 2 if group == "run.1" else 1
            got[group] = [(await asyncio.wait_for(layer.receive(channel), 5))["first"] for _ in range(count)]
        assert got == {"run.1": [0, 1], "run.2": [7]}
    finally:
        await layer.flush()
        broadcast._publishers.clear()


async def test_a_round_asks_who_listens_once_and_gets_the_same_answers_as_each_run_would():
    layer = get_channel_layer()
    viewers = broadcast.local_viewers(layer)

    class Viewer:
        def offer(self, message: dict) -> None:
            pass

    watched, grouped, unheard = 910_001, 910_002, 910_003
    viewer = Viewer()
    await viewers.join(watched, viewer)
    channel = await layer.new_channel()
    await layer.group_add(group_name(grouped), channel)
    try:
        listened = broadcast.listening()
        assert [listened(run) for run in (watched, grouped, unheard)] == [True, True, False]
        assert [broadcast.listened(run) for run in (watched, grouped, unheard)] == [True, True, False]
    finally:
        viewers.leave(watched, viewer)
        await layer.group_discard(group_name(grouped), channel)


async def test_statuses_of_runs_ending_together_go_out_with_the_rounds_not_one_send_each(monkeypatch):
    # 1,000 runs ending in the same second each published its status alone (one Redis round trip at a
    # time under the connection's lock, the events' rounds of other runs waiting behind them).
    layer = RecordingLayer(many=True)
    monkeypatch.setattr(broadcast, "get_channel_layer", lambda: layer)
    await broadcast.publish_events(1, 0, ['{"seq":0}'])
    await asyncio.gather(*(broadcast.publish_status(run_id, "completed", {}, last_seq=0) for run_id in range(1, 9)))
    assert len(layer.calls) <= 3  # the first alone, the rest together (not eight sends)
    assert sorted(group for call in layer.calls[1:] for group in call) == sorted(group_name(i) for i in range(1, 9))
    assert layer.calls[0] == [group_name(1)]  # run 1's batch, before its status
