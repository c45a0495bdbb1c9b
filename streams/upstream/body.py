"""Reading a streaming response body straight from the connection, without a coroutine per read.

Through httpx, every read of a body wakes the run's coroutine and passes the bytes up through
httpcore's connection, h11's parser and httpx's stream iterators. A run at 50 events a second reads
once per event, so under a few hundred runs that path cost more than recording the events did
(docs/performance.md). Here the connection's protocol hands every read to :class:`StreamedBody`,
which removes the chunked framing and gives the body's bytes to the run's callback within the same
turn of the event loop. The run's coroutine sleeps until the body ends, fails, stalls, or the
callback asks it to wait (for a flush).

httpx still sends the request and reads the response head (connection pool, TLS, proxies-off,
timeouts, errors, error bodies): the asyncio backend leaves the body unread for us
(streams/upstream/asyncio_backend.py). Framings h11 would read, read the same way: chunked,
Content-Length and until-close; anything else (a content coding, another network backend) is read
through httpx as before (client.read_body decides).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from streams.upstream.asyncio_backend import AsyncioStream

LINE_LIMIT = 16 * 1024  # a chunk-size or trailer line longer than this is refused (h11's limit too)
CHUNK_SIZE_DIGITS = 20  # h11's limit on the hex digits of a chunk size
HEX_DIGITS = b"0123456789abcdefABCDEF"

OnBytes = Callable[[bytes], bool]


class BodyDropped(Exception):
    """The connection ended, or broke its framing, before the body was complete."""


class BodyStalled(Exception):
    """No byte arrived for the stall limit."""


class ChunkedFraming:
    """``Transfer-Encoding: chunked``, fed as it arrives: :meth:`feed` returns the chunks' payloads
    (one piece per chunk, as h11 gives them: a reader that fails on one chunk has taken the ones before)."""

    def __init__(self) -> None:
        self.done = False
        self._remaining = 0  # payload bytes of the current chunk still to come
        self._footer = 0  # bytes of the CRLF after a chunk's payload still to come
        self._pending = b""  # an incomplete chunk-size or trailer line
        self._trailer = False

    def feed(self, data: bytes) -> list[bytes]:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        elif not (self._remaining or self._footer or self._trailer):
            # A slow stream's every read: exactly one whole chunk, "<hex size>\r\n<payload>\r\n".
            line_end = data.find(b"\r\n", 0, CHUNK_SIZE_DIGITS + 2)
            digits = data[:line_end]
            if line_end > 0 and not digits.strip(HEX_DIGITS) and data[-2:] == b"\r\n":
                size = int(digits, 16)
                if size and len(data) == line_end + size + 4:
                    return [data[line_end + 2:-2]]
        pieces: list[bytes] = []
        position, end = 0, len(data)
        while position < end and not self.done:
            if self._remaining:
                take = min(self._remaining, end - position)
                pieces.append(data[position:position + take] if take < end else data)
                self._remaining -= take
                position += take
                if not self._remaining:
                    self._footer = 2
            elif self._footer:
                expected = b"\r\n"[2 - self._footer:]
                got = data[position:position + self._footer]
                if got != expected[:len(got)]:
                    raise BodyDropped(f"malformed chunk footer: {got!r} (expected {expected!r})")
                self._footer -= len(got)
                position += len(got)
            else:
                line_end = data.find(b"\r\n", position)
                if line_end == -1:
                    self._pending = data[position:]
                    if len(self._pending) > LINE_LIMIT:
                        raise BodyDropped("a chunk header or trailer line is too long")
                    break
                line = data[position:line_end]
                position = line_end + 2
                if self._trailer:
                    self.done = not line  # trailer fields are skipped; a blank line ends the body
                else:
                    self._chunk_header(line)
        return pieces

    def _chunk_header(self, line: bytes) -> None:
        digits = line.split(b";", 1)[0].rstrip(b" \t") if b";" in line else line.rstrip(b" \t")
        if not 0 < len(digits) <= CHUNK_SIZE_DIGITS or digits.strip(HEX_DIGITS):
            raise BodyDropped(f"illegal chunk header: {line[:40]!r}")
        size = int(digits, 16)
        if size:
            self._remaining = size
        else:
            self._trailer = True

    def end(self) -> None:
        if not self.done:
            raise BodyDropped("peer closed connection without sending complete message body (incomplete chunked read)")


class LengthFraming:
    """``Content-Length: n``: the first n bytes."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.received = 0
        self.done = length == 0

    def feed(self, data: bytes) -> list[bytes]:
        left = self.length - self.received
        if len(data) >= left:
            data = data[:left]
            self.done = True
        self.received += len(data)
        return [data] if data else []

    def end(self) -> None:
        if not self.done:
            raise BodyDropped("peer closed connection without sending complete message body: "
                              f"received {self.received} bytes, expected {self.length}")


class CloseFraming:
    """Neither: the body runs until the server closes the connection."""

    done = False

    def feed(self, data: bytes) -> list[bytes]:
        return [data]

    def end(self) -> None:
        self.done = True


Framing = ChunkedFraming | LengthFraming | CloseFraming


class StreamedBody:
    """One response body read from its connection: ``await read(on_bytes, on_wait)``.

    ``on_bytes(data)`` runs inside the protocol's ``data_received`` with the body bytes of one
    network read; it returns True when the reader should stop reading until ``await on_wait()``
    (a full buffer being flushed). Whatever it raises ends the read and is raised by :meth:`read`.
    """

    def __init__(self, stream: AsyncioStream, framing: Framing, stall_timeout: float) -> None:
        self._protocol = stream._protocol
        self._transport = stream._transport
        self._framing = framing
        self._stall = stall_timeout
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()  # when bytes last arrived
        self._on_bytes: OnBytes = _ignore
        self._wakeup: asyncio.Future[str] = self._loop.create_future()
        self._error: BaseException | None = None
        self._waiting = False
        self._held: list[bytes] = []  # body pieces still to hand over once the wait is over
        self._timer: asyncio.TimerHandle | None = None

    async def read(self, on_bytes: OnBytes, on_wait: Callable[[], Awaitable[object]]) -> None:
        protocol = self._protocol
        self._on_bytes = on_bytes
        self._timer = self._loop.call_at(self._last + self._stall, self._check_stall)
        protocol.sink, protocol.sink_end = self._data_received, self._ended
        try:
            early = bytes(protocol.buffer)  # what came with the head, or after it, before this read
            protocol.buffer.clear()
            if early:
                self._data_received(early)
            if protocol.eof and not self._wakeup.done():
                self._ended(protocol.error)
            if self._framing.done and not self._wakeup.done():
                self._wakeup.set_result("done")  # a body that was whole at once (Content-Length: 0)
            if protocol.paused:  # the backend's own flow control, from before: it is ours now
                protocol.paused = False
                if not self._wakeup.done():
                    self._transport.resume_reading()
            while True:
                outcome = await self._wakeup
                if outcome == "done":
                    return
                if outcome == "error":
                    raise self._error  # type: ignore[misc]
                # outcome "wait": reading is paused until the caller's wait is over.
                self._timer.cancel()
                await on_wait()
                self._wakeup = self._loop.create_future()
                self._waiting = False
                self._last = self._loop.time()
                self._timer = self._loop.call_at(self._last + self._stall, self._check_stall)
                held, self._held = self._held, []
                self._deliver(held)  # what came before any end or failure seen during the wait
                if self._wakeup.done():
                    continue
                if self._error is not None:
                    self._wakeup.set_result("error")
                elif protocol.eof:
                    self._ended(protocol.error)
                else:
                    self._transport.resume_reading()
        finally:
            self._timer.cancel()
            protocol.sink = protocol.sink_end = None

    # --- called by the connection's protocol -------------------------------------------------

    def _data_received(self, data: bytes) -> None:
        if (self._wakeup.done() and not self._waiting) or self._error is not None:
            return  # the read is over (done or failed): nothing more is wanted
        self._last = self._loop.time()
        try:
            pieces = self._framing.feed(data)
        except BodyDropped as exc:
            self._fail(exc)
            return
        if self._waiting:  # paused, yet a TLS record already decrypted still came
            self._held.extend(pieces)
            return
        self._deliver(pieces)

    def _deliver(self, pieces: list[bytes]) -> None:
        for index, piece in enumerate(pieces):
            try:
                wait = self._on_bytes(piece)
            except Exception as exc:
                self._fail(exc)
                return
            if wait:
                self._held = pieces[index + 1:]
                self._waiting = True
                self._transport.pause_reading()
                self._wakeup.set_result("wait")
                return
        if self._framing.done:
            self._wakeup.set_result("done")

    def _ended(self, exc: BaseException | None) -> None:
        if self._wakeup.done():
            return  # a clean end after the body was complete, or the end seen while waiting
        if exc is not None:
            self._fail(BodyDropped(str(exc) or repr(exc)))
            return
        try:
            self._framing.end()
        except BodyDropped as dropped:
            self._fail(dropped)
            return
        self._wakeup.set_result("done")

    def _check_stall(self) -> None:
        if self._wakeup.done():
            return
        due = self._last + self._stall
        if self._loop.time() >= due:
            self._fail(BodyStalled(f"no bytes for {self._stall:g} s"))
        else:
            self._timer = self._loop.call_at(due, self._check_stall)

    def _fail(self, exc: BaseException) -> None:
        """The read is over with ``exc`` (raised once the caller's wait, if any, is over)."""
        if self._error is None:
            self._error = exc
        self._transport.pause_reading()
        if not self._wakeup.done():
            self._wakeup.set_result("error")


def _ignore(data: bytes) -> bool:
    return False
