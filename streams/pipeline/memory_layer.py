"""The embedded mode's in-memory channel layer, without a deep copy of every event batch per viewer,
without a sweep of every channel on every receive, and without a task per member per group send.

Channels' ``InMemoryChannelLayer`` deep-copies each message for each receiving channel, so that one
receiver mutating it cannot affect another. An event batch is a list of immutable JSON strings:
a shallow copy of the list gives the same protection at C speed. With many viewers of a fast
run the deep copies alone were a large share of a core (bench/fanout.py, docs/performance.md).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.exceptions import ChannelFull
from channels.layers import InMemoryChannelLayer

# Channels sweeps every channel and group for expired messages on each receive: O(viewers) per
# message, a visible share of a process with hundreds of viewers. Once a second keeps expiry within a second.
CLEAN_EVERY_S = 1.0


class BatchInMemoryChannelLayer(InMemoryChannelLayer):
    _last_clean = 0.0

    def _clean_expired(self) -> None:
        now = time.monotonic()
        if now - self._last_clean >= CLEAN_EVERY_S:
            self._last_clean = now
            super()._clean_expired()

    def _queue(self, channel: str) -> asyncio.Queue:
        # Channels writes setdefault(channel, asyncio.Queue(...)): a new queue built on every call.
        queue = self.channels.get(channel)
        if queue is None:
            queue = self.channels[channel] = asyncio.Queue(maxsize=self.get_capacity(channel))
        return queue

    async def receive(self, channel: str) -> dict:
        self.require_valid_channel_name(channel)
        self._clean_expired()
        queue = self._queue(channel)
        try:
            _, message = await queue.get()
        finally:
            if queue.empty():
                self.channels.pop(channel, None)
        return message

    async def group_send(self, group: str, message: dict) -> None:
        """Channels makes a task per member and waits for them with ``as_completed``; a send here
        never waits (a full channel drops the message, as Channels does), so one after another."""
        assert isinstance(message, dict), "Message is not a dict"
        self.require_valid_group_name(group)
        self._clean_expired()
        for channel in list(self.groups.get(group, ())):
            try:
                await self.send(channel, message)
            except ChannelFull:
                pass

    async def group_send_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        """A round of publishes (streams.pipeline.broadcast.GroupPublisher) in one call."""
        for group, message in items:
            if group in self.groups:
                await self.group_send(group, message)

    async def send(self, channel: str, message: dict) -> None:
        events = message.get("events") if message.get("type") == "run.events" else None
        if not isinstance(events, list) or not all(type(e) is str for e in events[:1]):
            await super().send(channel, message)
            return
        assert "__asgi_channel__" not in message
        self.require_valid_channel_name(channel)
        queue = self._queue(channel)
        try:
            queue.put_nowait((time.time() + self.expiry, {**message, "events": list(events)}))
        except asyncio.queues.QueueFull:
            raise ChannelFull(channel) from None
