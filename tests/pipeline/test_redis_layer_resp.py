"""The scaled mode's viewers' layer speaks RESP2 to Redis unless told otherwise: redis-py 8's RESP3
parser stringifies every pub/sub message for a debug log line (streams/pipeline/redis_layer.py)."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from streams.pipeline.redis_layer import BatchPubSubChannelLayer
from tests.support.scaled import REDIS_URL, services_missing

pytestmark = [pytest.mark.services,
              pytest.mark.skipif(services_missing() is not None, reason=f"needs Redis: {services_missing()}")]


async def test_the_layers_connections_speak_resp2_and_carry_messages():
    prefix = f"sstest-{uuid.uuid4().hex[:8]}"
    layer = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        channel = await layer.new_channel()
        await layer.group_add("run.1", channel)
        await layer.group_send_many([("run.1", {"type": "run.events", "run": 1, "first": 0, "events": ["{}"]}),
                                     ("run.2", {"type": "run.events", "run": 2, "first": 0, "events": ["{}"]})])
        message = await asyncio.wait_for(layer.receive(channel), 5)
        shard = layer._get_layer()._shards[0]
        assert shard._pubsub.connection.protocol == 2
        assert message == {"type": "run.events", "run": 1, "first": 0, "events": ["{}"]}
    finally:
        await layer.flush()


def test_a_host_that_names_its_protocol_keeps_it():
    layer = BatchPubSubChannelLayer(hosts=[{"address": REDIS_URL, "protocol": 3}, REDIS_URL], prefix="x")
    assert [host["protocol"] for host in layer._kwargs["hosts"]] == [3, 2]


async def test_the_receive_task_waits_for_the_next_message_without_polling():
    prefix = f"sstest-{uuid.uuid4().hex[:8]}"
    layer = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    sender = BatchPubSubChannelLayer(hosts=[REDIS_URL], prefix=prefix)
    try:
        channel = await layer.new_channel()
        await layer.group_add("run.1", channel)
        pubsub = layer._get_layer()._shards[0]._pubsub
        reads = []
        parse_response = pubsub.parse_response

        async def counted(*args, **kwargs):
            reads.append(kwargs)
            return await parse_response(*args, **kwargs)

        pubsub.parse_response = counted
        await asyncio.sleep(0.2)  # the task's current read (begun before counting) may end once
        before = len(reads)
        await asyncio.sleep(0.6)  # idle: channels_redis' own loop asks every 0.1 s
        assert len(reads) - before <= 1
        await sender.group_send_many([("run.1", {"type": "run.flag", "run": 1, "flag": {}}),
                                      ("run.2", {"type": "run.flag", "run": 2, "flag": {}})])
        assert await asyncio.wait_for(layer.receive(channel), 5) == {"type": "run.flag", "run": 1, "flag": {}}
    finally:
        await layer.flush()
        await sender.flush()
