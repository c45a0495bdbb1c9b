"""Runs streamed by something other than a launcher (the gateway) register how to stop them here,
so the dashboard's Stop (streams.live.control.cancel_run) reaches them.

In this process the stop is a direct call. A Stop that lands on another web process (scaled out)
is sent over the channel layer to the group every process relaying gateway runs listens on; the
process that has the run stops it, the others ignore the message.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Callable

from channels.layers import get_channel_layer

log = logging.getLogger(__name__)

STOP_GROUP = "streamscope.stops"
MEMBERSHIP_REFRESH_S = 3600.0  # channel layers forget group members after a day by default
RENEW_RETRY_S = 10.0  # a failed renewal is tried again this soon

_stoppers: dict[int, Callable[[str], None]] = {}
_listeners: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task] = weakref.WeakKeyDictionary()


def register(run_id: int, stop: Callable[[str], None]) -> None:
    """``stop(reason)`` must end the run soon and return at once. Call it on the event loop."""
    _stoppers[run_id] = stop
    _ensure_listener()


def unregister(run_id: int) -> None:
    _stoppers.pop(run_id, None)


def stop_here(run_id: int, reason: str) -> bool:
    """Stop the run if this process streams it; False when it does not."""
    stop = _stoppers.get(run_id)
    if stop is None:
        return False
    stop(reason)
    return True


async def request_stop(run_id: int, reason: str) -> None:
    """Ask whichever process relays the run to stop it (at most once delivery, like every publish)."""
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(STOP_GROUP, {"type": "run.stop", "run": run_id, "reason": reason})


def _ensure_listener() -> None:
    loop = asyncio.get_running_loop()
    task = _listeners.get(loop)
    if task is None or task.done():
        # A context of its own: it outlives the request that first needed it.
        _listeners[loop] = loop.create_task(_listen(), name="streamscope-stop-listener",
                                            context=contextvars.Context())


async def _listen() -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    channel = await layer.new_channel("stops")
    await layer.group_add(STOP_GROUP, channel)
    # The membership is renewed beside the receive, never by cancelling it: channels_redis' pub/sub
    # layer drops a channel whose receive is cancelled, and a stop published before the next
    # receive subscribes it again would be lost.
    renewing = asyncio.get_running_loop().create_task(
        renew_membership(layer, STOP_GROUP, channel, MEMBERSHIP_REFRESH_S, "the gateway stops' listener"))
    try:
        while True:
            try:
                message = await layer.receive(channel)
            except Exception:  # a layer hiccup (Redis restarting): try again shortly
                log.warning("listening for gateway stops failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)
                continue
            if message and message.get("type") == "run.stop" and isinstance(message.get("run"), int):
                stop_here(message["run"], str(message.get("reason") or "stopped in the dashboard"))
    finally:
        renewing.cancel()


async def renew_membership(layer, group: str, channel: str, every_s: float, what: str) -> None:
    """Add ``channel`` to ``group`` again every ``every_s`` seconds, for as long as it is awaited.

    Channel layers forget a group's members after a while (channels_redis: a day). A renewal that
    fails (Redis restarting) is logged and tried again :data:`RENEW_RETRY_S` later; it never ends
    the loop, or the member would silently stop hearing the group once the layer forgot it.
    """
    wait = every_s
    while True:
        await asyncio.sleep(wait)
        try:
            await layer.group_add(group, channel)
        except Exception:
            log.warning("renewing %s's group membership failed; trying again in %.0f s", what,
                        min(every_s, RENEW_RETRY_S), exc_info=True)
            wait = min(every_s, RENEW_RETRY_S)
        else:
            wait = every_s
