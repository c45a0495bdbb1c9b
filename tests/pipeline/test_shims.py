"""Channels' layer internals the pipeline's two layers build on: fail loudly on an upgrade that
moves them (the in-memory layer's storage and expiry sweep; channels_redis' shard objects)."""

import asyncio

import pytest
from channels.layers import InMemoryChannelLayer

from streams.pipeline.memory_layer import BatchInMemoryChannelLayer


def test_the_in_memory_layer_still_keeps_what_the_batch_layer_overrides():
    layer = InMemoryChannelLayer()
    assert isinstance(layer.channels, dict)
    assert callable(getattr(layer, "_clean_expired", None))
    assert callable(getattr(layer, "get_capacity", None))


async def test_the_batch_layer_delivers_through_those_internals():
    layer = BatchInMemoryChannelLayer()
    channel = await layer.new_channel()
    await layer.group_add("g", channel)
    await layer.group_send("g", {"type": "run.events", "events": ["{}"]})
    assert (await asyncio.wait_for(layer.receive(channel), 1))["events"] == ["{}"]


async def test_channels_redis_shards_still_have_what_group_send_many_reads():
    pubsub = pytest.importorskip("channels_redis.pubsub")
    layer = pubsub.RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379"])
    inner = layer._get_layer()
    shard = inner._get_shard(inner._get_group_channel_name("g"))
    for name in ("_lock", "_ensure_redis"):
        assert hasattr(shard, name), f"channels_redis shard lost {name}: streams/pipeline/redis_layer.py"
    assert hasattr(shard, "_redis")
