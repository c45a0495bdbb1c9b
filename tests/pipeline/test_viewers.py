"""The process's registry of viewers: a run's messages reach its viewers here, once each, without a
channel-layer message per viewer; with a layer that reaches other processes, one channel joins
each watched run's group."""

from __future__ import annotations

import asyncio

from channels.layers import get_channel_layer

from streams.pipeline.broadcast import publish_events, publish_flag, publish_status
from streams.pipeline.viewers import LocalViewers, group_name, local_viewers


class Seen:
    def __init__(self) -> None:
        self.messages: list[dict] = []

    def offer(self, message: dict) -> None:
        self.messages.append(message)


class Broken:
    def offer(self, message: dict) -> None:
        raise RuntimeError("broken viewer")


async def test_embedded_publishes_reach_each_viewer_of_the_run_directly():
    viewers = local_viewers()
    assert viewers.local  # the tests' layer is the in-memory one
    first, second, other, broken = Seen(), Seen(), Seen(), Broken()
    await viewers.join(101, broken)
    await viewers.join(101, first)
    await viewers.join(101, second)
    await viewers.join(102, other)
    await publish_events(101, 0, ['{"seq":0}', '{"seq":1}'])
    await publish_status(101, "completed", {}, None, last_seq=1)
    await publish_flag(102, {"id": 7})
    for seen in (first, second):
        assert [(m["type"], m["run"]) for m in seen.messages] == [("run.events", 101), ("run.status", 101)]
        assert seen.messages[0]["events"] == ['{"seq":0}', '{"seq":1}'] and seen.messages[0]["first"] == 0
    assert [(m["type"], m["flag"]) for m in other.messages] == [("run.flag", {"id": 7})]
    viewers.leave(101, first)
    await publish_events(101, 2, ['{"seq":2}'])
    assert len(first.messages) == 2 and len(second.messages) == 3
    assert not get_channel_layer().groups.get(group_name(101))  # nobody joined the layer's group for this


async def test_the_layers_group_still_gets_every_message_for_other_listeners():
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(103), channel)
    await publish_events(103, 0, ['{"seq":0}'])
    message = await asyncio.wait_for(layer.receive(channel), 1)
    assert message["type"] == "run.events" and message["run"] == 103
    await layer.group_discard(group_name(103), channel)


class RemoteLayer:
    """A layer that reaches other processes (the Redis one, as the registry sees it)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()
        self.calls: list[tuple[str, str]] = []
        self.added = asyncio.Event()

    async def new_channel(self) -> str:
        return "specific.registry"

    async def group_add(self, group: str, channel: str) -> None:
        await asyncio.sleep(0.01)  # a round trip: joiners wait for it
        self.calls.append(("add", group))
        self.added.set()

    async def group_discard(self, group: str, channel: str) -> None:
        self.calls.append(("discard", group))

    async def receive(self, channel: str) -> dict:
        return await self.queue.get()


async def test_with_a_layer_between_processes_one_channel_joins_each_watched_run():
    layer = RemoteLayer()
    viewers = LocalViewers(layer)
    first, second = Seen(), Seen()
    await asyncio.gather(viewers.join(5, first), viewers.join(5, second))
    assert layer.calls == [("add", "run.5")]  # once for the process, in place before join returned
    layer.queue.put_nowait({"type": "run.events", "run": 5, "first": 0, "events": ["{}"]})
    layer.queue.put_nowait({"type": "run.events", "run": 6, "first": 0, "events": ["{}"]})  # nobody here
    for _ in range(20):
        await asyncio.sleep(0)
    assert len(first.messages) == len(second.messages) == 1
    viewers.leave(5, first)
    viewers.leave(5, second)
    await viewers.join(5, first)  # discard, then add again, in that order
    assert layer.calls == [("add", "run.5"), ("discard", "run.5"), ("add", "run.5")]
    viewers._listener.cancel()


async def test_listening_goes_on_after_the_layer_fails(monkeypatch, caplog):
    from streams.pipeline import viewers as viewers_module

    monkeypatch.setattr(viewers_module, "RETRY_S", 0)
    asked = []
    got = []
    done = asyncio.get_running_loop().create_future()

    class Layer:
        async def receive(self, channel):
            asked.append(channel)
            if len(asked) == 1:
                raise ConnectionError("the layer's server went away")
            if len(asked) == 2:
                return {"type": "run.batch", "n": 1}
            done.set_result(None)
            await asyncio.Event().wait()  # nothing more comes

    listening = asyncio.ensure_future(viewers_module.listen(Layer(), "ch-1", got.append, "test listener"))
    await asyncio.wait_for(done, 5)
    listening.cancel()
    assert got == [{"type": "run.batch", "n": 1}] and asked == ["ch-1"] * 3
    assert "test listener: receiving from the channel layer failed" in caplog.text
