"""A flush round's messages reach Redis as one script call per shard (streams/pipeline/redis_layer.py),
and every message still arrives, in order, to every subscriber of its group."""

from __future__ import annotations

import asyncio
import hashlib
import uuid

import pytest

from streams.pipeline import redis_layer
from streams.pipeline.redis_layer import BatchPubSubChannelLayer
from tests.support.scaled import REDIS_URL, services_missing

pytestmark = [pytest.mark.services,
              pytest.mark.skipif(services_missing() is not None, reason=f"needs Redis: {services_missing()}")]


def events(run: int, first: int, count: int = 3, size: int = 10) -> dict:
    return {"type": "run.events", "run": run, "first": first,
            "events": [f'{{"seq":{first + i},"x":"{"a" * size}"}}' for i in range(count)]}


class CommandLog:
    """The commands a layer's publishing connection sends, by name, one list per round trip."""

    def __init__(self, redis) -> None:
        self.round_trips: list[list[str]] = []
        execute_command, pipeline = redis.execute_command, redis.pipeline

        async def logged_command(*args, **options):
            self.round_trips.append([str(args[0]).upper()])
            return await execute_command(*args, **options)

        def logged_pipeline(*args, **kwargs):
            pipe = pipeline(*args, **kwargs)
            execute = pipe.execute

            async def logged_execute(*a, **k):
                self.round_trips.append([str(command[0][0]).upper() for command in pipe.command_stack])
                return await execute(*a, **k)

            pipe.execute = logged_execute
            return pipe

        redis.execute_command, redis.pipeline = logged_command, logged_pipeline


async def subscribed(prefix: str, groups: list[str]) -> tuple[BatchPubSubChannelLayer, str]:
    layer = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    channel = await layer.new_channel()
    for group in groups:
        await layer.group_add(group, channel)
    return layer, channel


def publishing_shard(layer: BatchPubSubChannelLayer):
    shard = layer._get_layer()._shards[0]
    shard._ensure_redis()
    return shard


async def receive_all(layer: BatchPubSubChannelLayer, channel: str, count: int) -> list[dict]:
    return [await asyncio.wait_for(layer.receive(channel), 5) for _ in range(count)]


async def test_a_round_of_many_runs_is_one_command_and_every_message_arrives_in_order():
    prefix = f"sstest-{uuid.uuid4().hex[:8]}"
    groups = [f"run.{run}" for run in range(50)]
    receiver, channel = await subscribed(prefix, groups)
    sender = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        log = CommandLog(publishing_shard(sender)._redis)
        sent = [events(run, 0) for run in range(50)] + [events(run, 3) for run in range(50)]
        await sender.group_send_many([(f"run.{m['run']}", m) for m in sent])
        assert log.round_trips == [["EVALSHA"]]
        assert await receive_all(receiver, channel, len(sent)) == sent
    finally:
        await receiver.flush()
        await sender.flush()


async def test_a_round_larger_than_one_call_takes_several_calls_in_one_round_trip(monkeypatch):
    monkeypatch.setattr(redis_layer, "PUBLISH_ALL_MAX_BYTES", 400)
    prefix = f"sstest-{uuid.uuid4().hex[:8]}"
    receiver, channel = await subscribed(prefix, ["run.1", "run.2"])
    sender = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        log = CommandLog(publishing_shard(sender)._redis)
        sent = [events(1 + i % 2, i * 3, size=60) for i in range(6)] + [events(1, 99, count=1, size=2000)]
        await sender.group_send_many([(f"run.{m['run']}", m) for m in sent])
        assert len(log.round_trips) == 1 and len(log.round_trips[0]) > 2
        assert set(log.round_trips[0]) == {"EVALSHA"}
        assert await receive_all(receiver, channel, len(sent)) == sent
    finally:
        await receiver.flush()
        await sender.flush()


@pytest.mark.parametrize("calls", [1, 3])
async def test_a_redis_without_the_script_gets_its_text_and_nothing_is_lost(monkeypatch, calls):
    # A script Redis has never seen (as after a restart or SCRIPT FLUSH), without flushing anyone else's.
    script = redis_layer.PUBLISH_ALL + f" -- {uuid.uuid4().hex}"
    monkeypatch.setattr(redis_layer, "PUBLISH_ALL", script)
    monkeypatch.setattr(redis_layer, "PUBLISH_ALL_SHA", hashlib.sha1(script.encode()).hexdigest())
    if calls > 1:
        monkeypatch.setattr(redis_layer, "PUBLISH_ALL_MAX_BYTES", 200)
    prefix = f"sstest-{uuid.uuid4().hex[:8]}"
    receiver, channel = await subscribed(prefix, ["run.1"])
    sender = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        sent = [events(1, i * 3, size=60) for i in range(calls)]
        await sender.group_send_many([("run.1", m) for m in sent])
        assert await receive_all(receiver, channel, len(sent)) == sent
        # Loaded now: the next round goes by its hash alone.
        log = CommandLog(publishing_shard(sender)._redis)
        await sender.group_send_many([("run.1", events(1, 90))])
        assert log.round_trips == [["EVALSHA"]]
        assert await receive_all(receiver, channel, 1) == [events(1, 90)]
    finally:
        await receiver.flush()
        await sender.flush()


def test_script_calls_keep_the_order_and_split_by_size(monkeypatch):
    monkeypatch.setattr(redis_layer, "PUBLISH_ALL_MAX_BYTES", 10)
    messages = [("a", b"12345"), ("b", b"12345"), ("c", b"1"), ("d", b"x" * 30), ("e", b"1")]
    assert redis_layer._script_calls(messages) == [["a", b"12345", "b", b"12345"], ["c", b"1"], ["d", b"x" * 30],
                                                   ["e", b"1"]]
    assert redis_layer._script_calls([]) == []


async def test_only_the_calls_redis_refused_for_an_unknown_script_are_sent_again():
    """In a pipeline of several calls some can fail NOSCRIPT and others not (another process's EVAL
    loaded the script between them): sending them all again by text published the others twice
    (found in review). A stand-in pipeline gives that answer, which a real Redis gives only in a race."""
    from redis.exceptions import NoScriptError

    class Pipeline:
        def __init__(self) -> None:
            self.sent: list[tuple] = []

        def evalsha(self, sha, keys, *argv):
            self.sent.append(argv)

        async def execute(self, raise_on_error=True):
            answers = [1, NoScriptError("NOSCRIPT No matching script."), 1]
            if raise_on_error:
                raise answers[1]
            return answers

    class Redis:
        def pipeline(self, transaction):
            return Pipeline()

    calls = [["a", b"1"], ["b", b"2"], ["c", b"3"]]
    assert await redis_layer._publish_all(Redis(), calls, "sha") == [["b", b"2"]]
