"""The first viewers of many runs joining at the same moment (a web process's first second under
load): every run's group is joined by the one channel this process listens to, so each viewer
gets its run's live messages. Before, each of those joins made a channel of its own while the
first was still being made, and the runs joined through any but the listened-to one got nothing
live until their end (bench/concurrency.py --mode scaled: ~22 s maxima, or every viewer late)."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import pytest

from streams.pipeline.viewers import LocalViewers, group_name
from tests.support.scaled import REDIS_URL, services_missing


class Seen:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def offer(self, message: dict) -> None:
        self.messages.append(message)


class RoundTripLayer:
    """A layer between processes whose every call is a round trip (an await), as Redis is; a group
    message reaches the channels that joined the group, each read by ``receive``."""

    def __init__(self) -> None:
        self.names = itertools.count()
        self.queues: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, set[str]] = {}

    async def new_channel(self) -> str:
        await asyncio.sleep(0)
        name = f"specific.{next(self.names)}"
        self.queues[name] = asyncio.Queue()
        return name

    async def group_add(self, group: str, channel: str) -> None:
        await asyncio.sleep(0)
        self.groups.setdefault(group, set()).add(channel)

    async def group_discard(self, group: str, channel: str) -> None:
        self.groups.get(group, set()).discard(channel)

    async def group_send(self, group: str, message: dict) -> None:
        for channel in self.groups.get(group, ()):
            self.queues[channel].put_nowait(message)

    async def receive(self, channel: str) -> dict:
        return await self.queues[channel].get()


async def until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


async def test_first_viewers_of_many_runs_at_once_all_get_live_messages():
    layer = RoundTripLayer()
    viewers = LocalViewers(layer)
    seen = {run_id: Seen() for run_id in range(1, 21)}
    await asyncio.gather(*(viewers.join(run_id, viewer) for run_id, viewer in seen.items()))
    assert len(layer.queues) == 1  # one channel for the process
    for run_id in seen:
        await layer.group_send(group_name(run_id), {"type": "run.events", "run": run_id, "first": 0, "events": ["{}"]})
    try:
        await until(lambda: all(viewer.messages for viewer in seen.values()))
    finally:
        viewers._listener.cancel()
    assert all(len(viewer.messages) == 1 for viewer in seen.values())


@pytest.mark.services
@pytest.mark.skipif(services_missing() is not None, reason=f"needs Redis: {services_missing()}")
async def test_first_viewers_of_many_runs_at_once_get_batches_published_through_redis():
    from streams.pipeline.redis_layer import BatchPubSubChannelLayer

    prefix = f"sstest-{uuid.uuid4().hex[:8]}"
    web = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    worker = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    viewers = LocalViewers(web)
    seen = {run_id: Seen() for run_id in range(1, 41)}
    try:
        await asyncio.gather(*(viewers.join(run_id, viewer) for run_id, viewer in seen.items()))
        await worker.group_send_many([(group_name(run_id), {"type": "run.events", "run": run_id, "first": 0,
                                                            "events": ['{"seq":0}']}) for run_id in seen])
        await until(lambda: all(viewer.messages for viewer in seen.values()))
    finally:
        viewers._listener.cancel()
        await web.flush()
        await worker.flush()
    assert all(len(viewer.messages) == 1 for viewer in seen.values())
