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

And it writes a viewer's text frames itself (:class:`TextFrames`): a server's websocket frame is
unmasked, so it is a first byte, a length and the payload. Through the ASGI ``send`` each frame
went Channels' ``send`` -> Daphne's ``handle_reply`` -> autobahn's ``sendMessage``, which checks
and counts and formats debug-log arguments with debug off: ~15 us per frame, most of the viewer
send path (docs/performance.md). Anything unusual (not open yet or closing, autobahn holding
queued data, compression negotiated, a message past Daphne's size limit) still goes that way.
"""

from __future__ import annotations

import functools
import struct
from typing import Any

from autobahn.exception import Disconnected as SocketClosed  # Daphne's websocket said it is closed
from autobahn.websocket.protocol import WebSocketProtocol

__all__ = ["SocketClosed", "TextFrames", "send_at_once", "text_frame", "transport_of", "unsent_bytes"]


def daphne_protocol_of(send: Any) -> tuple[Any, Any] | None:
    """(Daphne's server, the connection's protocol) behind an ASGI ``send`` (``partial(
    server.handle_reply, protocol)``, possibly wrapped by Channels' session middleware), or None
    under another server or a test communicator."""
    for _ in range(4):
        if isinstance(send, functools.partial) and send.args:
            return getattr(send.func, "__self__", None), send.args[0]
        send = getattr(getattr(send, "__self__", None), "real_send", None)  # InstanceSessionWrapper
    return None


def transport_of(send: Any) -> Any | None:
    """Daphne's Twisted transport behind an ASGI ``send`` (see :func:`daphne_protocol_of`), or None
    under another server or a test communicator: then nothing is bounded."""
    found = daphne_protocol_of(send)
    if found is None:
        return None
    transport = getattr(found[1], "transport", None)
    if hasattr(transport, "dataBuffer") and hasattr(transport, "_tempDataLen"):
        return transport
    return None


def text_frame(payload: bytes) -> bytes:
    """One unfragmented, unmasked websocket text frame (RFC 6455 5.2): FIN and opcode 1, then the
    length in 7 bits, or 126 and 16 bits, or 127 and 64 bits, then the payload."""
    size = len(payload)
    if size < 126:
        return _SHORT_HEAD(0x81, size) + payload
    if size < 1 << 16:
        return _HEAD_16(0x81, 126, size) + payload  # one header object, the payload copied once
    return _HEAD_64(0x81, 127, size) + payload


_SHORT_HEAD = struct.Struct(">BB").pack
_HEAD_16 = struct.Struct(">BBH").pack
_HEAD_64 = struct.Struct(">BBQ").pack


class TextFrames:
    """Writes text frames straight to the transport of one of Daphne's websockets (see the module's
    docstring); :meth:`send` says False when the frame must go through the ASGI ``send`` instead."""

    def __init__(self, server: Any, protocol: Any) -> None:
        self.server = server
        self.protocol = protocol

    @classmethod
    def of(cls, send: Any) -> TextFrames | None:
        found = daphne_protocol_of(send)
        if found is None or not isinstance(found[1], WebSocketProtocol) or found[0] is None:
            return None
        return cls(*found)

    def send(self, text: str) -> bool:
        """True when the frame was written (or dropped as Daphne drops frames for a connection it
        has let go); False to send it the usual way, which also raises for a closed socket."""
        protocol = self.protocol
        connection = self.server.connections.get(protocol)
        if connection is None or connection.get("disconnected"):
            return True  # Daphne's handle_reply drops it silently, and so do we
        if (not text or protocol.state != WebSocketProtocol.STATE_OPEN or protocol.send_queue
                or protocol.send_state != WebSocketProtocol.SEND_STATE_GROUND
                or protocol._perMessageCompress is not None or protocol.maskServerFrames
                or not protocol.factory.isServer):
            return False
        payload = text.encode()
        limit = protocol.maxMessagePayloadSize
        if 0 < limit < len(payload) or 0 < protocol.autoFragmentSize < len(payload):
            return False  # autobahn refuses or fragments it, and says so
        protocol.transport.write(text_frame(payload))
        return True


def unsent_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport that the kernel has not accepted yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen


def send_at_once(transport: Any) -> bool:
    """Make ``transport.write`` and ``writeSequence`` send on the socket right away when nothing is
    waiting before it, as asyncio's transports do; what the socket does not take (or any error) goes
    Twisted's way, buffered, in order, and a dead socket is noticed by Twisted as before. Plain TCP
    only (TLS writes go through the TLS layer). True when installed (or already)."""
    if getattr(transport, "TLS", True) or not hasattr(transport, "socket") or not hasattr(transport, "_tempDataLen"):
        return False
    if "write" in vars(transport):
        return True
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

    def write_sequence(iovec: Any) -> None:
        # Twisted's HTTP response writes its head and each chunk of a chunked body this way.
        write(b"".join(iovec))

    transport.write = write
    transport.writeSequence = write_sequence
    return True
