"""The gateway's upstream leg: its request to the provider, on a kept connection, parsed by httptools.

Every millisecond between a gateway request arriving and the provider's answer counts towards the
client's time to first byte, and httpx's request path (its client, httpcore's pool, h11) cost ~1.2 ms
of CPU per request on this VM against ~0.3 ms for writing the request and reading the answer's head
on the socket (docs/performance.md). Here a request is one write on a pooled asyncio connection and
the answer is parsed by httptools, the C HTTP/1.1 parser uvicorn uses (already a dependency for the
simulator's own server); its body is handed on chunk by chunk as it arrives.

It answers with :class:`LegResponse`, which has the part of ``httpx.Response`` the gateway uses
(``status_code``, ``headers``, ``aiter_bytes``, ``aread``, ``aclose``), and fails with httpx's own
exceptions (ConnectError, ConnectTimeout, WriteError, ReadTimeout, RemoteProtocolError), so the
gateway's handling of a provider that cannot be reached, stalls or drops is the same either way.
Requests it cannot write as they are (a header or target that needs httpx's encoding, a URL with
credentials or another scheme) go through httpx instead (:func:`can_send`).
"""

from __future__ import annotations

import asyncio
import functools
import re
import ssl
import time
import zlib
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools
import httpx

from streams.pipeline.per_loop import PerLoop
from streams.upstream.httpx_shim import tls_context

HIGH_WATER = 256 * 1024  # bytes of body held before the connection is read no further
LOW_WATER = 64 * 1024
# An idle connection older than this is closed, not reused: under the 5 s after which uvicorn (and
# httpcore's pool) let an idle connection go, so a kept one is rarely closed under a request.
KEEPALIVE_S = 4.0
IDLE_PER_ORIGIN = 20
USER_AGENT = "streamscope-gateway"
# What may go into a request line or a header as it is (RFC 9110 field values: visible ASCII, space, tab).
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e]*")
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_QUERY = re.compile(r"[\x21-\x7e]*")
_KEEP_ALIVE_TIMEOUT = re.compile(r"timeout\s*=\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
_PATH = re.compile(r"[A-Za-z0-9_.\-/]+")  # what the gateway's routes let through (proxy.ROUTES): no escaping


class _Origin:
    __slots__ = ("scheme", "host", "port", "base_path")

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
            raise ValueError("not a plain http(s) URL")
        self.scheme = parts.scheme
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.base_path = parts.path.rstrip("/")
        if self.base_path and not _PATH.fullmatch(self.base_path):
            raise ValueError("a base path that would need escaping")

    @property
    def key(self) -> tuple[str, str, int]:
        return self.scheme, self.host, self.port

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


@functools.cache
def _origin(base_url: str) -> _Origin | None:
    try:
        return _Origin(base_url)
    except ValueError:
        return None


def can_send(base_url: str, path: str, query: str, headers: dict[str, str]) -> bool:
    """Whether this module writes the request as httpx would mean it (else the gateway uses httpx)."""
    if _origin(base_url) is None or not _QUERY.fullmatch(query) or not _PATH.fullmatch(path):
        return False
    return all(_TOKEN.fullmatch(name) and _FIELD_VALUE.fullmatch(value) for name, value in headers.items())


def request_head(base_url: str, method: str, path: str, query: str, headers: dict[str, str],
                 body: bytes | None) -> bytes:
    origin = _origin(base_url)
    assert origin is not None
    target = f"{origin.base_path}/{path}"
    if query:
        target = f"{target}?{query}"
    lines = [f"{method} {target} HTTP/1.1", f"Host: {origin.host_header}"]
    named = {name.lower() for name in headers}
    if "user-agent" not in named:
        lines.append(f"User-Agent: {USER_AGENT}")
    lines.extend(f"{name}: {value}" for name, value in headers.items() if name.lower() != "content-length")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii")


class _Connection(asyncio.Protocol):
    """One kept connection to an origin; parses each answer's head and body as bytes arrive."""

    def __init__(self, origin_key: tuple[str, str, int]) -> None:
        self.origin_key = origin_key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self.keepalive_s = KEEPALIVE_S  # shorter when the provider says so (Keep-Alive: timeout=N)
        self.response: LegResponse | None = None
        self.parser: Any = None
        self._header_items: list[tuple[bytes, bytes]] = []
        self._paused = False
        self.received = False  # any byte of an answer came on this connection

    # --- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # No TCP_NODELAY to set: asyncio sets it on every TCP transport it makes.
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.received = True
        response = self.response
        if response is None or self.parser is None or response._ended:  # bytes nobody asked for: not reused
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response._fail(httpx.RemoteProtocolError(f"the provider sent a malformed answer ({exc})"))
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]

    def eof_received(self) -> bool:
        self.closed = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.response is not None:
            self.response._connection_ended(exc)

    # --- httptools ----------------------------------------------------------------------------

    def _past_the_answer(self) -> bool:
        """True (and the connection given up) for anything parsed after the answer was complete:
        a provider sending more than it answered is not trusted with the next request."""
        if self.response is None or self.response._ended:
            self.closed = True
            if self.transport is not None:
                self.transport.close()
            return True
        return False

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._past_the_answer():
            return
        self._header_items.append((name, value))

    def on_headers_complete(self) -> None:
        if self._past_the_answer():
            return
        status = self.parser.get_status_code()
        items, self._header_items = self._header_items, []
        if 100 <= status < 200:
            return  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        self.response._head(status, items)  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        if self._past_the_answer():
            return
        self.response._body(body)  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        if self._past_the_answer() or self.parser.get_status_code() < 200:
            return
        keep = self.parser.should_keep_alive()
        self.response._complete(keep)  # type: ignore[union-attr]

    # --- flow control -------------------------------------------------------------------------

    def pause(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()


class LegResponse:
    """An answer from the provider, its body read as it arrives (see the module's docstring)."""

    def __init__(self, connection: _Connection, pool: _Pool, stall_timeout: float) -> None:
        self._connection = connection
        self._pool = pool
        self._stall_timeout = stall_timeout
        self.status_code = 0
        self.headers = httpx.Headers()
        self._chunks: deque[bytes] = deque()
        self._held = 0
        self._head_done = False
        self._complete_ok = False  # the whole message arrived (framed by length or chunks)
        self._keep = False
        self._ended = False  # no more bytes will come
        self._failure: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False
        self._framed_by_close = False
        self._decoder: Any = None  # a compressed answer's (zlib)
        self._undecodable = ""  # a content coding zlib does not read

    # --- fed by the connection ----------------------------------------------------------------

    def _head(self, status: int, items: list[tuple[bytes, bytes]]) -> None:
        self.status_code = status
        self.headers = httpx.Headers(items)
        coding = self.headers.get("content-encoding", "identity").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            # Asked for identity, but a provider may compress anyway: the client gets the bytes
            # decoded, as httpx gave them (the header does not go on).
            self._decoder = zlib.decompressobj(zlib.MAX_WBITS | 32 if coding != "deflate" else zlib.MAX_WBITS)
        elif coding != "identity":
            self._undecodable = coding
        said = _KEEP_ALIVE_TIMEOUT.search(self.headers.get("keep-alive", ""))
        if said:  # a second under what the provider said, so it never closes one under a request
            self._connection.keepalive_s = min(KEEPALIVE_S, max(0.0, float(said[1]) - 1.0))
        names = {name.lower() for name, _ in items}
        self._framed_by_close = (b"content-length" not in names and b"transfer-encoding" not in names
                                 and status not in (204, 304))
        self._head_done = True
        self._wake()

    def _body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._held += len(data)
        if self._held > HIGH_WATER:
            self._connection.pause()
        self._wake()

    def _complete(self, keep: bool) -> None:
        self._complete_ok = True
        self._keep = keep
        self._ended = True
        self._wake()

    def _connection_ended(self, exc: Exception | None) -> None:
        if not self._ended:
            self._ended = True
            if self._head_done and self._framed_by_close and exc is None:
                self._complete_ok = True  # a body that ends with the connection ended well
            elif self._failure is None:
                where = "before its answer" if not self._head_done else "in the middle of its answer's body"
                self._failure = httpx.RemoteProtocolError(f"the provider closed the connection {where}")
        self._wake()

    def _fail(self, failure: BaseException) -> None:
        if self._failure is None:
            self._failure = failure
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self, what: str) -> None:
        loop = asyncio.get_running_loop()
        self._waiter = waiter = loop.create_future()
        timer = loop.call_later(self._stall_timeout, _time_out, waiter, what)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    # --- the httpx.Response part the gateway uses -------------------------------------------------

    async def _read_head(self) -> None:
        while not self._head_done:
            if self._failure is not None:
                raise self._failure
            if self._ended:
                raise httpx.RemoteProtocolError("the provider closed the connection before its answer")
            await self._wait("answer")

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        try:
            if self._undecodable:
                raise httpx.DecodingError(f"the provider answered in a coding the gateway cannot read: "
                                          f"{self._undecodable}")
            while True:
                if self._chunks:
                    # Everything that has arrived, as one: a burst's many small chunks (one per
                    # event) would otherwise each cost the relay a write.
                    chunks = self._chunks
                    chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
                    chunks.clear()
                    self._held = 0
                    self._connection.resume()
                    if self._decoder is not None:
                        chunk = self._decode(chunk)
                        if not chunk:
                            continue
                    yield chunk
                    continue
                if self._failure is not None:
                    raise self._failure
                if self._ended:
                    if self._decoder is not None and (tail := self._decoder.flush()):
                        yield tail
                    return
                await self._wait("body")
        finally:
            if self._ended and not self._chunks:
                self._release()

    def _decode(self, chunk: bytes) -> bytes:
        try:
            return self._decoder.decompress(chunk)
        except zlib.error as exc:
            raise httpx.DecodingError(f"the provider's compressed answer could not be read ({exc})") from exc

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        self._release()

    def _release(self) -> None:
        """The connection back to the pool when its answer was read whole, else closed."""
        if self._released:
            return
        self._released = True
        connection = self._connection
        connection.response = None
        reusable = (self._complete_ok and self._keep and not self._chunks and self._failure is None
                    and not connection.closed)
        if reusable:
            self._pool.put(connection)
        else:
            connection.closed = True
            if connection.transport is not None:
                connection.transport.close()


def _time_out(waiter: asyncio.Future[None], what: str) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"the provider sent no {what} in time"))


class _Pool:
    """Idle kept connections by origin, one pool per event loop."""

    def __init__(self) -> None:
        self.idle: dict[tuple[str, str, int], deque[_Connection]] = {}

    def take(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self.idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            transport = connection.transport
            if (not connection.closed and transport is not None and not transport.is_closing()
                    and now - connection.idle_since < connection.keepalive_s):
                return connection
            if transport is not None:
                transport.close()
        return None

    def put(self, connection: _Connection) -> None:
        connection.idle_since = time.monotonic()
        idle = self.idle.setdefault(connection.origin_key, deque())
        idle.append(connection)
        while len(idle) > IDLE_PER_ORIGIN:
            oldest = idle.popleft()
            if oldest.transport is not None:
                oldest.transport.close()


_pools = PerLoop(_Pool)


async def _connect(origin: _Origin, connect_timeout: float) -> _Connection:
    loop = asyncio.get_running_loop()
    tls = tls_context() if origin.scheme == "https" else None
    try:
        _, connection = await asyncio.wait_for(
            loop.create_connection(lambda: _Connection(origin.key), origin.host, origin.port, ssl=tls,
                                   server_hostname=origin.host if tls else None),
            connect_timeout)
    except TimeoutError as exc:
        raise httpx.ConnectTimeout(f"no connection to {origin.host}:{origin.port} in {connect_timeout:g} s") from exc
    except (OSError, ssl.SSLError) as exc:
        raise httpx.ConnectError(f"could not connect to {origin.host}:{origin.port} ({exc})") from exc
    return connection


def _may_send_again(method: str, headers: dict[str, str]) -> bool:
    """A GET reads; a request with an Idempotency-Key is taken once by the provider however often sent."""
    return method == "GET" or any(name.lower() == "idempotency-key" for name in headers)


async def send(base_url: str, method: str, path: str, query: str, headers: dict[str, str], body: bytes | None,
               connect_timeout: float, stall_timeout: float) -> LegResponse:
    """Send the request (:func:`can_send` said yes) and return once the answer's head is read.

    A kept connection the provider closed while it was idle is noticed only when written to. Nothing
    of an answer came back, but the provider may have read the request and begun on it, so it goes
    once more on a new connection only when sending it twice is harmless (:func:`_may_send_again`);
    otherwise the failure is the caller's, as httpx (which never sends a request again) said it."""
    origin = _origin(base_url)
    assert origin is not None
    head = request_head(base_url, method, path, query, headers, body)
    pool = _pools.get()
    kept = pool.take(origin.key)
    while True:
        connection = kept or await _connect(origin, connect_timeout)
        response = LegResponse(connection, pool, stall_timeout)
        connection.response = response
        connection.parser = httptools.HttpResponseParser(connection)
        connection.received = False
        try:
            try:
                connection.transport.write(head + body if body else head)  # type: ignore[union-attr]
            except (OSError, RuntimeError) as exc:
                raise httpx.WriteError(f"could not send the request to the provider ({exc})") from exc
            await response._read_head()
        except BaseException as exc:
            response._release()  # cancelled or failed before the answer: the connection is closed
            if (kept is not None and not connection.received and isinstance(exc, httpx.TransportError)
                    and not isinstance(exc, httpx.TimeoutException) and _may_send_again(method, headers)):
                kept = None
                continue
            raise
        return response
