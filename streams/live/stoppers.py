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
    renewing = asyncio.get_running_loop().create_task(_renew_membership(layer, channel))
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


async def _renew_membership(layer, channel: str) -> None:
    while True:
        await asyncio.sleep(MEMBERSHIP_REFRESH_S)
        try:
            await layer.group_add(STOP_GROUP, channel)
        except Exception:
            log.warning("renewing the gateway stops' group membership failed; trying again later", exc_info=True)
