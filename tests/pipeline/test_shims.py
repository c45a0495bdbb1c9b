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


async def test_channels_redis_still_has_what_the_blocking_receive_and_loop_layer_override():
    # streams/pipeline/redis_layer.py: _BlockingShard replaces _do_receiving and reads _pubsub and
    # _receive_message; BatchPubSubChannelLayer builds _LoopLayer from _args/_kwargs into _layers.
    pubsub = pytest.importorskip("channels_redis.pubsub")
    utils = pytest.importorskip("channels_redis.utils")
    assert callable(getattr(utils, "_wrap_close", None)) and callable(getattr(utils, "decode_hosts", None))
    for name in ("_do_receiving", "_receive_message"):
        assert callable(getattr(pubsub.RedisSingleShardConnection, name, None)), name
    layer = pubsub.RedisPubSubChannelLayer(hosts=["redis://127.0.0.1:6379"])
    for name in ("_layers", "_args", "_kwargs"):
        assert hasattr(layer, name), f"channels_redis layer lost {name}: streams/pipeline/redis_layer.py"
    inner = layer._get_layer()
    assert isinstance(inner, pubsub.RedisPubSubLoopLayer) and inner._shards
    shard = inner._shards[0]
    assert hasattr(shard, "host") and hasattr(shard, "_pubsub")
