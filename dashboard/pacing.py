"""A client slower than what it is sent: Daphne takes every body chunk a response sends and holds
what the client's socket has not taken, with no limit (it applies no backpressure to ASGI sends).

Past HIGH_WATER unsent on the client's connection a sender waits, before its next chunk, until it is
under LOW_WATER (looked at every DRAIN_POLL_S), so whatever produces the chunks (the gateway's relay
reading its provider, the built-in simulator, a download) goes at the client's pace and a response
holds bounded memory. A client that takes nothing for STREAMSCOPE_STALL_TIMEOUT_S is let go.

The gateway's direct path (dashboard/api/gateway.py) waits before each chunk itself, since a stop's
last event must go out at once however far behind the client is; :class:`PacedResponses` does the
same for every response Django sends. Under another server (or a test's ASGI communicator) there is
no Twisted transport to look at and nothing is paced: uvicorn, for one, waits for a slow reader.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import struct
from typing import Any

from django.conf import settings

from dashboard.simulator_gate import PREFIX as SIMULATOR_PREFIX
from dashboard.twisted_shim import transport_of, unsent_bytes
from streams.upstream.providers import simulator_key

try:
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ  # SIOCOUTQ on sockets
except (ImportError, AttributeError):  # not Linux: progress is read from Twisted's buffer alone
    fcntl = None  # type: ignore[assignment]
    _OUTQ = None
_INT = struct.Struct("i")
_INT_ZERO = bytes(_INT.size)

log = logging.getLogger(__name__)

HIGH_WATER = 8 * 1024 * 1024
LOW_WATER = 4 * 1024 * 1024
DRAIN_POLL_S = 0.002


class ClientGone(Exception):
    """A client that took nothing for the stall timeout was disconnected."""


def far_behind(transport: Any) -> bool:
    return transport is not None and transport.connected and unsent_bytes(transport) > HIGH_WATER


def kernel_queued(transport: Any) -> int:
    """Bytes in the socket's send queue the client has not acknowledged (Linux's SIOCOUTQ); 0 where
    it cannot be asked. Twisted's own buffer shrinks only when the kernel takes more, after a
    slow reader has emptied much of that queue: a steady reader slower than the queue's size per
    stall timeout looked like one taking nothing (review, 2026-11-30)."""
    sock = getattr(transport, "socket", None)
    if sock is None or _OUTQ is None:
        return 0
    try:
        return _INT.unpack(fcntl.ioctl(sock.fileno(), _OUTQ, _INT_ZERO))[0]
    except (OSError, ValueError):
        return 0


async def client_caught_up(transport: Any, path: str, let_go: bool = True) -> None:
    """Wait until the client's connection holds under LOW_WATER unsent; a client that took nothing
    (neither from Twisted's buffer nor from the socket's queue) for the stall timeout is
    disconnected (ClientGone: the caller sends nothing more), unless ``let_go`` is False."""
    unsent = unsent_bytes(transport)
    queued = unsent + kernel_queued(transport)
    stall_s = settings.STREAMSCOPE_STALL_TIMEOUT_S
    loop = asyncio.get_running_loop()
    progress_at = loop.time()
    while transport.connected and unsent > LOW_WATER:
        await asyncio.sleep(DRAIN_POLL_S)
        unsent = unsent_bytes(transport)
        now_queued = unsent + kernel_queued(transport)
        if now_queued < queued:
            progress_at = loop.time()
        elif loop.time() - progress_at > stall_s and let_go:
            log.warning("%s: the client took nothing for %g s; letting it go", path, stall_s)
            transport.abortConnection()
            raise ClientGone(f"the client took nothing for {stall_s:g} s")
        queued = now_queued


class PacedResponses:
    """ASGI: the HTTP responses of ``app`` (Django) wait while their client is far behind."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> Any:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        transport = transport_of(send)
        if transport is None:
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        return await self.app(scope, receive, _PacedSend(send, transport, path, not _own_simulator_call(scope)).send)


def _own_simulator_call(scope: dict) -> bool:
    """A request of this deployment's own to the built-in simulator (its internal key): the gateway's
    leg, which reads only as fast as the gateway's client does, or a run's reader. It is paced but
    never let go: the gateway lets go of its own client when that one stalls, closing this too."""
    if not scope.get("path", "").startswith(SIMULATOR_PREFIX):
        return False
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            return hmac.compare_digest(value, b"Bearer " + simulator_key().encode())
    return False


class _PacedSend:
    """One response's ``send``; ``real_send`` keeps Daphne's connection findable behind it
    (dashboard.twisted_shim.daphne_protocol_of)."""

    __slots__ = ("real_send", "transport", "path", "let_go", "gone")

    def __init__(self, send: Any, transport: Any, path: str, let_go: bool) -> None:
        self.real_send, self.transport, self.path, self.let_go = send, transport, path, let_go
        self.gone = False

    async def send(self, message: dict) -> None:
        if self.gone:
            return  # let go: Django hears the disconnect and stops its response
        if message["type"] == "http.response.body" and far_behind(self.transport):
            try:
                await client_caught_up(self.transport, self.path, self.let_go)
            except ClientGone:
                self.gone = True
                return
        await self.real_send(message)
