"""Publishing a run's events and status to the channel-layer group its viewers join.

Publishing is at-most-once (channel layers drop messages for full channels), so the database
is written first and viewers refill any gap from it: see dashboard/consumers.py.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from channels.layers import get_channel_layer

from streams.pipeline.rounds import Rounds


def group_name(run_id: int) -> str:
    return f"run.{run_id}"


async def publish_flag(run_id: int, flag: dict[str, Any]) -> None:
    """A new flag on the run (a rule or the moderation model matched): viewers show it at once."""
    await get_channel_layer().group_send(group_name(run_id), {"type": "run.flag", "flag": flag})


async def publish_events(run_id: int, first_seq: int, encoded_events: list[str]) -> None:
    """One message carries a whole batch; consumers splice it into a frame without re-encoding.
    Batches of runs flushed in the same round go out together (:class:`GroupPublisher`)."""
    if not encoded_events:
        return
    message = {"type": "run.events", "first": first_seq, "events": encoded_events}
    await _publisher().send(group_name(run_id), message)


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
    layer = get_channel_layer()
    message = {
        "type": "run.status",
        "status": status,
        "metrics": metrics,
        "error": error,
        "last_seq": last_seq,
    }
    if extra:
        message.update(extra)
    await layer.group_send(group_name(run_id), message)
