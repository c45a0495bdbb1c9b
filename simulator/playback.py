"""Write a plain stream's frames straight to an ASGI ``send`` from the shared clock's ticks.

On the direct ASGI path of an open simulator (:mod:`simulator.asgi`) a stream with no fault to play
(no drop, stall or rewriting) is not iterated by its request's task: the shared clock calls it back
when its next frame is due, and in that callback its frames are built, recorded and handed to the
server's ``send`` at once. Every stream due on the same tick is written in that one pass of the
loop. A write costs no task wake-up, future or timer of its own, and none of the layers of async
generators between the frames and the socket (docs/simulator.md, "Load generator"). The bytes,
their times and what is recorded are those of :func:`simulator.pacing.play`.

A server's ``send`` is an awaitable; it is driven here without a task. When it has to wait (the
client reads slowly: the server pauses writing) the request's own task finishes it, then the
stream goes back to the clock. On uvicorn (httptools) a chunk is written straight to the
connection's transport instead, framed as uvicorn's ``send`` frames it, whenever writing is not
paused: no coroutine, ASGI message or server bookkeeping per write.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable
from dataclasses import dataclass
from typing import Any

from simulator.builders import Step
from simulator.pacing import (
    BATCHED_TICK_S,
    CLOCK_TICK_S,
    MIN_SLEEP_S,
    Frame,
    Pacing,
    Timeline,
    shared_clock,
    stamp_suffix,
    wall_clock_us,
)

Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Playback:
    """A stream as the direct path plays it: its steps and pacing, how each event is framed, what
    is told of each batch (``record``) and of the end (``close``, also when the client left), and
    bytes sent after the last frame (``trailer``: chat's ``[DONE]``)."""

    steps: Iterable[Step]
    pacing: Pacing
    encode: Callable[[dict[str, Any]], bytes]
    record: Callable[[list[Frame]], None] | None = None
    close: Callable[[], None] | None = None
    trailer: bytes = b""


async def write_paced(playback: Playback, send: Send) -> None:
    """Send every frame of ``playback`` as ``http.response.body`` messages (``more_body``), each batch
    when it is due; returns after the last one (the caller ends the body)."""
    loop = asyncio.get_running_loop()
    writer = _Writer(playback, send, loop)
    try:
        while True:
            waiting = await writer.run()
            if waiting is None:
                return
            await _Finish(*waiting)
    finally:
        writer.stopped = True
        if playback.close is not None:
            playback.close()


class _Writer:
    def __init__(self, playback: Playback, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self.playback = playback
        self.send = send
        self.loop = loop
        self.clock = shared_clock(loop)
        self.timeline = Timeline(playback.steps, playback.pacing, playback.encode, loop.time())
        self.outcome: asyncio.Future[tuple[Coroutine[Any, Any, None], Any] | None] = loop.create_future()
        self.stopped = False
        self.grid = BATCHED_TICK_S if playback.pacing.write_interval_s else CLOCK_TICK_S
        self.write_body = direct_body_writer(send)

    def run(self) -> asyncio.Future[tuple[Coroutine[Any, Any, None], Any] | None]:
        """A future done when the stream ended (None) or its ``send`` has to wait (that send, to be
        finished by the caller before calling ``run`` again)."""
        self.outcome = self.loop.create_future()
        self._schedule(self.loop.time())
        return self.outcome

    def _schedule(self, now: float) -> None:
        wake_at = self.timeline.wake_at
        if wake_at - now > MIN_SLEEP_S:
            self.clock.call_at(wake_at, self._write, self.grid)
        else:  # due now (or behind, or unthrottled): on the next loop turn, after what else is ready
            self.loop.call_soon(self._write)

    def _write(self) -> None:
        if self.stopped or self.outcome.done():
            return
        now = self.loop.time()
        try:
            waiting = self._write_due(now)
        except BaseException as exc:  # the task that awaits the outcome raises it, as play() would
            self.outcome.set_exception(exc)
            return
        if waiting is not None:
            self.outcome.set_result(waiting)
        elif self.timeline.ended:
            self.outcome.set_result(None)
        else:
            self._schedule(now)

    def _write_due(self, now: float) -> tuple[Coroutine[Any, Any, None], Any] | None:
        playback = self.playback
        batch = self.timeline.take(now)
        if not batch:
            return None
        if playback.pacing.stamp:
            suffix = stamp_suffix(wall_clock_us())
            batch = [(event, frame[:-3] + suffix) for event, frame in batch]
        if playback.record is not None:
            playback.record(batch)
        body = batch[0][1] if len(batch) == 1 else b"".join([frame for _event, frame in batch])
        if self.timeline.ended and playback.trailer:
            body += playback.trailer
        if self.write_body is not None and self.write_body(body):
            return None
        sending = self.send({"type": "http.response.body", "body": body, "more_body": True})
        try:
            waiting_for = sending.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return None
        return sending, waiting_for  # type: ignore[return-value]


def direct_body_writer(send: Send) -> Callable[[bytes], bool] | None:
    """For uvicorn's httptools server, a function that writes a chunk of a started chunked body
    straight to the connection's transport, framed as uvicorn's ``send`` frames it (one write:
    size line, data, CRLF), and returns False when it cannot (the server paused writing: the chunk
    then goes through ``send``, which waits). None for any other server. It saves each write the
    coroutine, the ASGI message and uvicorn's checks (docs/simulator.md, "Load generator")."""
    httptools_impl = sys.modules.get("uvicorn.protocols.http.httptools_impl")
    cycle = getattr(send, "__self__", None)
    if httptools_impl is None or type(cycle) is not getattr(httptools_impl, "RequestResponseCycle", None):
        return None
    try:  # uvicorn's own state of the request (not an API of it: a version that changes it gets None)
        ready = (cycle.response_started and not cycle.response_complete and cycle.chunked_encoding
                 and cycle.scope["method"] != "HEAD")
        transport, flow = cycle.transport, cycle.flow
        ready = ready and isinstance(cycle.disconnected, bool) and isinstance(flow.write_paused, bool)
        ready = ready and callable(transport.write)
    except (AttributeError, KeyError, TypeError):
        return None
    if not ready:
        return None

    def write_body(body: bytes) -> bool:
        if cycle.disconnected:
            return True  # as uvicorn's send: nothing more goes out (the request's task sees the disconnect)
        if flow.write_paused:
            return False
        transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        return True

    return write_body


class _Finish:
    """Await the rest of a ``send`` that was started outside a task and had to wait for
    ``waiting_for`` (what it yielded)."""

    def __init__(self, sending: Coroutine[Any, Any, None], waiting_for: Any) -> None:
        self.sending = sending
        self.waiting_for = waiting_for

    def __await__(self) -> Generator[Any, None, None]:
        waiting_for = self.waiting_for
        while True:
            try:
                yield waiting_for
            except BaseException as exc:  # cancelled while waiting: the send sees it, as when awaited
                try:
                    waiting_for = self.sending.throw(exc)
                except StopIteration:
                    return
                continue
            try:
                waiting_for = self.sending.send(None)
            except StopIteration:
                return
