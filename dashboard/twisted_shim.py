"""The one place Streamscope reads Twisted's private state: how many bytes a viewer's TCP transport
still holds unsent (``dataBuffer``, ``offset`` and the private ``_tempDataLen`` of
``twisted.internet.abstract.FileDescriptor``). It is what lets a slow viewer be detected and
bounded instead of buffering without limit in Daphne. Twisted is pinned to the minor version this
was written against (pyproject.toml); ``tests/dashboard/test_shims.py`` fails loudly if the
attributes change.

It also lets a viewer's frames go to the socket at once (:func:`send_at_once`): Twisted's
``write`` only buffers and asks the reactor to watch the socket for writability, and the next turn
of the loop sends: two ``epoll_ctl`` calls and a callback through Twisted's logging context per
frame, about a sixth of the Daphne process's CPU with hundreds of viewers (docs/performance.md).
"""

from __future__ import annotations

import functools
from typing import Any

from autobahn.exception import Disconnected as SocketClosed  # Daphne's websocket said it is closed

__all__ = ["SocketClosed", "send_at_once", "transport_of", "unsent_bytes"]


def transport_of(send: Any) -> Any | None:
    """Daphne's Twisted transport behind an ASGI ``send`` (``partial(server.handle_reply,
    protocol)``, possibly wrapped by Channels' session middleware), or None under another server
    or a test communicator: then nothing is bounded."""
    for _ in range(4):
        if isinstance(send, functools.partial) and send.args:
            transport = getattr(send.args[0], "transport", None)
            if hasattr(transport, "dataBuffer") and hasattr(transport, "_tempDataLen"):
                return transport
            return None
        send = getattr(getattr(send, "__self__", None), "real_send", None)  # InstanceSessionWrapper
    return None


def unsent_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport that the kernel has not accepted yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def send_at_once(transport: Any) -> bool:
    """Make ``transport.write`` send on the socket right away when nothing is waiting before it,
    as asyncio's transports do; what the socket does not take (or any error) goes Twisted's way,
    buffered, in order, and a dead socket is noticed by Twisted as before. Plain TCP only (TLS
    writes go through the TLS layer). True when installed."""
    if getattr(transport, "TLS", True) or not hasattr(transport, "socket") or not hasattr(transport, "_tempDataLen"):
        return False
    buffered = type(transport).write

    def write(data: bytes) -> None:
        if (type(data) is bytes and transport.connected and not transport.disconnecting
                and not transport._writeDisconnected and not unsent_bytes(transport)):
            try:
                sent = transport.socket.send(data)
            except OSError:  # EAGAIN, or a broken connection: Twisted's own write handles both
                sent = 0
            if sent == len(data):
                return
            data = data[sent:]
        buffered(transport, data)

    transport.write = write
    return True
