"""Publishing a run's events and status to its viewers: the channel-layer group of the run, and in
embedded mode the viewers of this process directly (streams.pipeline.viewers). Every message
names its run (``"run"``), which is how a process's one listener hands it to that run's viewers.

Publishing is at-most-once (channel layers drop messages for full channels), so the database
is written first and viewers refill any gap from it: see dashboard/consumers.py.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable
from typing import Any

from channels.layers import get_channel_layer

from streams.pipeline.rounds import Rounds
from streams.pipeline.viewers import group_name, local_viewers

__all__ = ["GroupPublisher", "group_name", "listened", "listening", "publish_events", "publish_flag",
           "publish_round", "publish_status"]

log = logging.getLogger(__name__)


async def _send_now(run_id: int, message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    viewers = local_viewers(layer)
    if viewers.local:
        viewers.deliver(message)
    await layer.group_send(group_name(run_id), message)


async def publish_flag(run_id: int, flag: dict[str, Any]) -> None:
    """A new flag on the run (a rule or the moderation model matched): viewers show it at once."""
    await _send_now(run_id, {"type": "run.flag", "run": run_id, "flag": flag})


async def publish_events(run_id: int, first_seq: int, encoded_events: list[str]) -> None:
    """One message carries a whole batch; consumers splice it into a frame without re-encoding.
    Batches of runs flushed in the same round go out together (:class:`GroupPublisher`)."""
    if not encoded_events:
        return
    message = {"type": "run.events", "run": run_id, "first": first_seq, "events": encoded_events}
    await _publisher().send(group_name(run_id), message)


def listened(run_id: int) -> bool:
    """Whether a batch of the run published now could reach anyone: with the in-memory layer
    (embedded) a viewer registered here or a channel in the run's group; another layer reaches
    other processes, so always. Asked after the batch is stored: a viewer that joins later reads
    it from the store (it joins before it reads its backlog, dashboard/consumers.py)."""
    return listening()(run_id)


def listening() -> Callable[[int], bool]:
    """:func:`listened` for many runs at once (the flush clock's round): the layer and its registry
    are looked up once."""
    layer = get_channel_layer()
    viewers = local_viewers(layer)
    if not viewers.local:
        return _always
    runs, groups = viewers.runs, layer.groups
    return lambda run_id: run_id in runs or bool(groups.get(group_name(run_id)))


def _always(run_id: int) -> bool:
    return True


async def publish_round(batches: list[tuple[int, int, list[str]]]) -> None:
    """Several runs' batches ``(run_id, first_seq, encoded_events)`` at once (the flush clock's round,
    already stored); a failed publish is logged (viewers refill from the store)."""
    if not batches:
        return
    items = [(group_name(run_id), {"type": "run.events", "run": run_id, "first": first_seq, "events": events})
             for run_id, first_seq, events in batches]
    try:
        results = await _publisher().send_round(items)
    except Exception as exc:
        results = [exc] * len(items)
    for (_, message), error in zip(items, results):
        if error is not None:
            log.warning("run %s: publishing events %d.. failed: %r", message["run"], message["first"], error)


class GroupPublisher(Rounds[tuple[str, dict[str, Any]]]):
    """Like streams.pipeline.store.GroupWriter, for publishing: a message waits while a send is in flight,
    and the next send takes every message that arrived meanwhile, as one ``group_send_many`` when
    the layer has it (streams/pipeline/redis_layer.py: one Redis round trip), else side by side."""

    task_name = "streamscope-group-publisher"

    def __init__(self, layer: Any) -> None:
        super().__init__()
        self.layer = layer

    async def send(self, group: str, message: dict[str, Any]) -> None:
        await self.submit((group, message))

    async def send_round(self, items: list[tuple[str, dict[str, Any]]]) -> list[BaseException | None]:
        viewers = local_viewers(self.layer)
        if viewers.local:
            for _, message in items:
                viewers.deliver(message)
        send_many = getattr(self.layer, "group_send_many", None)
        if send_many is not None and len(items) > 1:
            await send_many(items)
            return [None] * len(items)
        results = await asyncio.gather(*(self.layer.group_send(name, message) for name, message in items),
                                       return_exceptions=True)
        return [r if isinstance(r, BaseException) else None for r in results]


# Per event loop, per layer object (tests swap layers).
_publishers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, GroupPublisher]] = (
    weakref.WeakKeyDictionary()
)


def _publisher() -> GroupPublisher:
    layer = get_channel_layer()
    per_loop = _publishers.setdefault(asyncio.get_running_loop(), {})
    publisher = per_loop.get(id(layer))
    if publisher is None or publisher.layer is not layer:
        publisher = per_loop[id(layer)] = GroupPublisher(layer)
    return publisher


async def publish_status(run_id: int, status: str, metrics: dict[str, Any], error: Any = None,
                         last_seq: int = -1, extra: dict[str, Any] | None = None) -> None:
    message = {
        "type": "run.status",
        "run": run_id,
        "status": status,
        "metrics": metrics,
        "error": error,
        "last_seq": last_seq,
    }
    if extra:
        message.update(extra)
    # With the events' batches (GroupPublisher), after the run's last batch: 1,000 runs ending in the
    # same second published 1,000 statuses one round trip at a time under the Redis connection's lock,
    # and the rounds of the runs still streaming waited behind them (docs/performance.md).
    await _publisher().send(group_name(run_id), message)
