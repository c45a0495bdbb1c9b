"""The gateway's stop listener (streams/live/stoppers.py) keeps hearing stops across its group
membership renewals: on channels_redis' pub/sub layer a cancelled receive drops the channel, and a
stop published before the next receive has subscribed it again is lost."""

from __future__ import annotations

import asyncio

from streams.live import stoppers


class PubSubLikeLayer:
    """What matters of the pub/sub layer here: a message to a channel not subscribed right now is
    lost; a receive subscribes (a round trip); a cancelled receive unsubscribes."""

    SUBSCRIBE_S = 0.05

    def __init__(self) -> None:
        self.queues: dict[str, asyncio.Queue] = {}
        self.groups: dict[str, set[str]] = {}

    async def new_channel(self, prefix: str) -> str:
        return f"{prefix}!only"

    async def group_add(self, group: str, channel: str) -> None:
        self.groups.setdefault(group, set()).add(channel)

    async def group_send(self, group: str, message: dict) -> None:
        for channel in self.groups.get(group, ()):
            if channel in self.queues:
                self.queues[channel].put_nowait(message)

    async def receive(self, channel: str) -> dict:
        if channel not in self.queues:
            await asyncio.sleep(self.SUBSCRIBE_S)
            self.queues[channel] = asyncio.Queue()
        try:
            return await self.queues[channel].get()
        except asyncio.CancelledError:
            self.queues.pop(channel, None)
            raise


async def test_a_stop_sent_just_after_a_membership_renewal_still_arrives(monkeypatch):
    layer = PubSubLikeLayer()
    monkeypatch.setattr(stoppers, "get_channel_layer", lambda: layer)
    monkeypatch.setattr(stoppers, "MEMBERSHIP_REFRESH_S", 0.1)
    stopped: list[str] = []
    stoppers.register(424242, stopped.append)
    listener = stoppers._listeners[asyncio.get_running_loop()]
    try:
        # Idle past a renewal (0.1 s): a listener that renewed by cancelling its receive is now
        # subscribing again (until ~0.15 s), and this stop would be lost.
        await asyncio.sleep(0.12)
        await stoppers.request_stop(424242, "stopped in the dashboard")
        await asyncio.sleep(0.2)
        assert stopped == ["stopped in the dashboard"]
        assert layer.groups[stoppers.STOP_GROUP] == {"stops!only"}
    finally:
        stoppers.unregister(424242)
        listener.cancel()
