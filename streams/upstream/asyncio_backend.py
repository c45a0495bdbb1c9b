"""An httpcore network backend on plain asyncio transports, for the upstream clients.

httpx's default backend goes through anyio, whose socket stream resumes and pauses the transport
around every read (two epoll_ctl calls) and opens a cancel scope per read for the timeout. A run
reads once per event, so under many concurrent runs that was a visible share of the process
executing them (figures in docs/performance.md). Here a protocol keeps what arrives in a buffer,
pausing the transport only when the buffer is full, and a read with data waiting returns at once.

While a response head is awaited, a read hands httpcore no byte past the end of that head, so the
body of a streaming response is still here, unread, when the response is returned: the run can then
take the connection over and read the body without httpcore (streams/upstream/body.py).

The contract is httpcore's ``AsyncNetworkBackend`` / ``AsyncNetworkStream``: reads return b"" at
the end, timeouts raise httpcore's ReadTimeout/WriteTimeout/ConnectTimeout, socket errors its
ReadError/WriteError/ConnectError, so httpx maps them to the exceptions it always raises.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import httpcore

HIGH_WATER = 256 * 1024  # bytes buffered before the transport is paused
LOW_WATER = 64 * 1024
# Where h11 ends a head: the first blank line, CRLF or bare LF (h11's own rule).
HEAD_END = re.compile(rb"\n\r?\n")


class _Protocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False
        self._readable: asyncio.Future | None = None
        self._writable: asyncio.Future | None = None
        # A request was sent and its response head is not read yet (see AsyncioStream.read).
        self.awaiting_head = False
        self.gave_body = False  # bytes after the response head went to httpcore (it reads the body)
        # Set while a body is read straight from the transport (body.py): every byte goes there,
        # and the end of the connection too (None: a clean end, else the error).
        self.sink: Callable[[bytes], None] | None = None
        self.sink_end: Callable[[BaseException | None], None] | None = None

    # transport → protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.sink is not None:
            self.sink(data)
            return
        self.buffer += data
        if len(self.buffer) > HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        if self.sink_end is not None:
            self.sink_end(None)
        return False  # let the transport close itself

    def connection_lost(self, exc: BaseException | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self.sink_end is not None:
            self.sink_end(exc)
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        self._writable = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    def _wake_reader(self) -> None:
        if self._readable is not None and not self._readable.done():
            self._readable.set_result(None)

    # stream → protocol
    async def wait_readable(self) -> None:
        self._readable = asyncio.get_running_loop().create_future()
        try:
            await self._readable
        finally:
            self._readable = None

    def take(self, max_bytes: int) -> bytes:
        if self.awaiting_head:
            max_bytes = self._head_bytes(max_bytes)
        else:
            self.gave_body = True
        data = bytes(self.buffer[:max_bytes])
        del self.buffer[:max_bytes]
        if self.paused and len(self.buffer) < LOW_WATER and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data

    def _head_bytes(self, max_bytes: int) -> int:
        """How much of the buffer a read may return while a head is awaited: through its end."""
        end = HEAD_END.search(self.buffer)
        if end is None:
            # All of it is head, but keep two bytes back: the blank line may end in the next data.
            return min(max_bytes, len(self.buffer) - 2) if len(self.buffer) > 2 and not self.eof else max_bytes
        head = self.buffer[: end.end()]
        if not (head.startswith(b"HTTP/1.1 1") or head.startswith(b"HTTP/1.0 1")) or head[9:12] == b"101":
            self.awaiting_head = False  # a final head (1xx other than 101 are followed by another)
        return min(max_bytes, end.end())

    async def wait_writable(self) -> None:
        if self._writable is not None:
            await self._writable


class AsyncioStream(httpcore.AsyncNetworkStream):
    def __init__(self, transport: asyncio.Transport, protocol: _Protocol) -> None:
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        while not protocol.eof and (
                not protocol.buffer or (protocol.awaiting_head and len(protocol.buffer) <= 2
                                        and HEAD_END.search(protocol.buffer) is None)):
            try:
                async with asyncio.timeout(timeout):
                    await protocol.wait_readable()
            except TimeoutError as exc:
                raise httpcore.ReadTimeout(f"no data within {timeout} s") from exc
        if protocol.buffer:
            return protocol.take(max_bytes)
        if protocol.error is not None:
            raise httpcore.ReadError(str(protocol.error) or repr(protocol.error)) from protocol.error
        return b""

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._protocol.error is not None or self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        self._protocol.awaiting_head = True  # a request (or its body) went out: its answer is due
        self._protocol.gave_body = False
        self._transport.write(buffer)
        try:
            async with asyncio.timeout(timeout):
                await self._protocol.wait_writable()
        except TimeoutError as exc:
            raise httpcore.WriteTimeout(f"could not write within {timeout} s") from exc

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport = await loop.start_tls(self._transport, self._protocol, ssl_context,
                                                 server_hostname=server_hostname)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"TLS handshake took longer than {timeout} s") from exc
        except (OSError, ssl.SSLError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or repr(exc)) from exc
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport  # type: ignore[assignment]
        return AsyncioStream(transport, self._protocol)  # type: ignore[arg-type]

    def body_taken(self) -> bool:
        """Whether httpcore has read past the last response head (so a body reader cannot take over)."""
        return self._protocol.gave_body or self._protocol.awaiting_head or self._protocol.sink is not None

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            return bool(self._protocol.buffer) or self._protocol.eof
        name = {"ssl_object": "ssl_object", "client_addr": "sockname", "server_addr": "peername",
                "socket": "socket"}.get(info)
        if name is None:
            return None
        try:
            return self._transport.get_extra_info(name)
        except AttributeError:  # a TLS transport that is already closed
            return None


class AsyncioBackend(httpcore.AsyncNetworkBackend):
    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        local = (local_address, 0) if local_address else None
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_connection(_Protocol, host, port, local_addr=local)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting took longer than {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or repr(exc)) from exc
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for option in socket_options or ():
                sock.setsockopt(*option)
        return AsyncioStream(transport, protocol)

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> AsyncioStream:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeout):
                transport, protocol = await loop.create_unix_connection(_Protocol, path)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"connecting took longer than {timeout} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc) or repr(exc)) from exc
        return AsyncioStream(transport, protocol)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
