"""The scaled mode's viewers' layer: Channels' Redis pub/sub layer plus ``group_send_many``.

``RedisPubSubChannelLayer`` publishes under a per-connection lock, one round trip at a time, so a
worker holding hundreds of runs queued each round's PUBLISHes behind each other, and the last
viewer heard of a commit most of a second late (docs/performance.md). ``group_send_many`` sends a
round's messages in one round trip per shard. It reaches into the layer's shard
objects (``_get_shard``, ``_lock``, ``_ensure_redis``, ``_redis``), so pyproject.toml keeps
channels-redis below the next minor version; tests/pipeline/test_shims.py checks those names and
tests/live/test_scaled_out.py runs it against Redis.

Its connections speak RESP2 unless a host says otherwise: redis-py 8 defaults to RESP3, whose
Python parser builds ``"Push response: " + str(message)`` for a debug log line on every pub/sub
message a web process receives, a few KB of text per batch (~8% of a web process's event loop in
bench/concurrency.py --mode scaled; 94-117 -> 70-83 us per message published and received in a
micro-benchmark). Pub/sub needs nothing of RESP3.

That round trip is one ``EVALSHA`` (a Lua loop of PUBLISHes; a few, in one pipeline, past 1 MB),
not a pipeline of one PUBLISH per message: redis-py packs each command and reads each reply on its
own, under an asyncio timeout, and a reply not yet buffered waits a turn of the stream worker's
busy event loop. The runs of a round are not flushed again until its publish returns, so a round
that outlasts the flush interval makes its runs skip a tick (docs/scaling.md). After a Redis
restart (scripts forgotten) the script's text goes with the call once (EVAL), which loads it.

A process's receive task waits for the next pub/sub message without a timeout: channels_redis asks
``get_message(timeout=0.1)`` in a loop, an asyncio timeout (and a wake-up every 0.1 s when idle)
per message; blocking, 113.6 / 83.4 -> 84.1 / 65.8 us per message in the micro-benchmark above.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any

from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer, RedisSingleShardConnection
from channels_redis.utils import _wrap_close, decode_hosts
from redis.exceptions import NoScriptError

log = logging.getLogger(__name__)

RESP_VERSION = 2
# ARGV: channel, message, channel, message...; returns how many were published.
PUBLISH_ALL = "for i = 1, #ARGV, 2 do redis.call('PUBLISH', ARGV[i], ARGV[i + 1]) end return #ARGV / 2"
PUBLISH_ALL_SHA = hashlib.sha1(PUBLISH_ALL.encode()).hexdigest()
# One script call carries at most this many bytes of messages (a round of 200 runs is ~1-3 MB;
# an 8 MB event goes alone): Redis reads a command whole before it runs it, and runs a script
# without serving anyone else.
PUBLISH_ALL_MAX_BYTES = 1 << 20


class BatchPubSubChannelLayer(RedisPubSubChannelLayer):
    def __init__(self, *args: Any, hosts: Any = None, **kwargs: Any) -> None:
        hosts = [{"protocol": RESP_VERSION, **host} for host in decode_hosts(hosts)]
        super().__init__(*args, hosts=hosts, **kwargs)

    def _get_layer(self) -> RedisPubSubLoopLayer:
        # channels_redis' own, with shards whose receive task blocks (see the module's docstring).
        loop = asyncio.get_running_loop()
        layer = self._layers.get(loop)
        if layer is None:
            layer = self._layers[loop] = _LoopLayer(*self._args, **self._kwargs, channel_layer=self)
            _wrap_close(self, loop)
        return layer

    async def group_send_many(self, items: list[tuple[str, dict[str, Any]]]) -> None:
        layer = self._get_layer()
        by_shard: dict[Any, list[tuple[str, bytes]]] = {}
        for group, message in items:
            channel = layer._get_group_channel_name(group)
            by_shard.setdefault(layer._get_shard(channel), []).append((channel, self.serialize(message)))
        for shard, messages in by_shard.items():
            calls = _script_calls(messages)
            async with shard._lock:
                shard._ensure_redis()
                missed = await _publish_all(shard._redis, calls, PUBLISH_ALL_SHA)
                if missed:  # Redis restarted or its scripts were flushed: EVAL loads it again
                    await _publish_all(shard._redis, missed, None)


def _script_calls(messages: list[tuple[str, bytes]]) -> list[list[Any]]:
    """``messages`` as the ARGV of script calls, in order, each under PUBLISH_ALL_MAX_BYTES unless
    one message is larger."""
    calls: list[list[Any]] = []
    argv: list[Any] = []
    size = 0
    for channel, data in messages:
        if argv and size + len(data) > PUBLISH_ALL_MAX_BYTES:
            calls.append(argv)
            argv, size = [], 0
        argv += (channel, data)
        size += len(data)
    if argv:
        calls.append(argv)
    return calls


async def _publish_all(redis: Any, calls: list[list[Any]], sha: str | None) -> list[list[Any]]:
    """Every call's PUBLISHes in one round trip; ``sha`` None sends the script's text (EVAL). Returns
    the calls Redis refused for not knowing the script (NOSCRIPT), to be sent again by text: only
    those, as in a pipeline some can fail and others not (another process's EVAL can load the script
    between two of them), and sending the others again would publish their messages twice. One call
    or several, the same pipeline: a round trip per round, whatever its size."""
    pipe = redis.pipeline(transaction=False)
    for argv in calls:
        if sha is None:
            pipe.eval(PUBLISH_ALL, 0, *argv)
        else:
            pipe.evalsha(sha, 0, *argv)
    results = await pipe.execute(raise_on_error=False)
    missed = [argv for argv, result in zip(calls, results, strict=True) if isinstance(result, NoScriptError)]
    for result in results:
        if isinstance(result, Exception) and not isinstance(result, NoScriptError):
            raise result
    return missed


class _BlockingShard(RedisSingleShardConnection):
    async def _do_receiving(self) -> None:
        while True:
            try:
                if self._pubsub and self._pubsub.subscribed:
                    message = await self._pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    self._receive_message(message)
                else:
                    await asyncio.sleep(0.1)
            except (asyncio.CancelledError, GeneratorExit):
                raise
            except Exception:  # Redis gone: redis-py reconnects and subscribes again on the next read
                log.exception("receiving from Redis pub/sub failed; trying again")
                await asyncio.sleep(1)


class _LoopLayer(RedisPubSubLoopLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shards = [_BlockingShard(shard.host, self) for shard in self._shards]
