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

from simulator.builders import TEXT_DELTA_STANDIN, Step
from simulator.pacing import (
    BATCHED_TICK_S,
    CLOCK_TICK_S,
    MIN_SLEEP_S,
    Frame,
    Pacing,
    Timeline,
    shared_clock,
    stamp_suffix,
    stamped,
    wall_clock_us,
)

Send = Callable[[dict[str, Any]], Awaitable[None]]
# Events a playback does not record: a non-background stored response keeps nothing of a text delta (its
# frames are not kept and its state changes only with the lifecycle and terminal events), and text deltas
# are most of a stream's events.
UNRECORDED = frozenset({"response.output_text.delta"})


@dataclass
class Playback:
    """A stream as the direct path plays it: its steps and pacing, how each event is framed, what
    is told of each batch (``record``) and of the end (``close``, also when the client left), and
    bytes sent after the last frame (``trailer``: chat's ``[DONE]``)."""

    steps: Iterable[Step]
    pacing: Pacing
    encode: Callable[[dict[str, Any]], bytes]
    record: Callable[[list[Frame]], None] | None = None  # of each batch, the events but text deltas
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
    # Slots: the clock's pass reads a writer once per write, cold after its 1 ms sleep (as Timeline's).
    __slots__ = ("clock", "cycle", "direct", "flow", "grid", "loop", "on_tick", "outcome", "playback", "send",
                 "stamp", "stopped", "timeline", "transport")

    def __init__(self, playback: Playback, send: Send, loop: asyncio.AbstractEventLoop) -> None:
        self.playback = playback
        self.send = send
        self.loop = loop
        self.clock = shared_clock(loop)
        self.timeline = Timeline(playback.steps, playback.pacing, playback.encode, loop.time())
        self.outcome: asyncio.Future[tuple[Coroutine[Any, Any, None], Any] | None] = loop.create_future()
        self.stopped = False
        self.grid = BATCHED_TICK_S if playback.pacing.write_interval_s else CLOCK_TICK_S
        self.direct = direct = DirectBody.of(send)
        # What the write of a lone text delta reads of uvicorn's request, held here: one object fewer per write.
        self.cycle, self.flow, self.transport = (
            (direct.cycle, direct.flow, direct.transport) if direct is not None else (None, None, None)
        )
        self.stamp = playback.pacing.stamp
        self.on_tick = self._write  # one bound method for every wait on the clock

    def run(self) -> asyncio.Future[tuple[Coroutine[Any, Any, None], Any] | None]:
        """A future done when the stream ended (None) or its ``send`` has to wait (that send, to be
        finished by the caller before calling ``run`` again)."""
        self.outcome = self.loop.create_future()
        self._schedule(self.loop.time())
        return self.outcome

    def _schedule(self, now: float) -> None:
        wake_at = self.timeline.wake_at
        if wake_at - now > MIN_SLEEP_S:
            self.clock.call_at(wake_at, self.on_tick, self.grid)
        else:  # due now (or behind, or unthrottled): on the next loop turn, after what else is ready
            self.loop.call_soon(self.on_tick)

    def _write(self) -> None:
        """The clock's callback: write what is due and wait for the next frame. A text delta that goes out
        alone (one write per event: the bulk of a paced stream) is written here, straight to uvicorn's
        transport as one chunk, stamp included, and the stream put back on the clock; anything else goes
        through ``_write_due``."""
        if self.stopped or self.outcome.done():
            return
        now = self.loop.time()
        try:
            alone = self.timeline.take_alone(now)
            if (
                alone is not None
                and self.direct is not None
                and (alone[0] is TEXT_DELTA_STANDIN or self.playback.record is None or alone[0]["type"] in UNRECORDED)
                and not self.cycle.disconnected
                and not self.flow.write_paused
            ):
                frame = alone[1]
                if self.stamp:
                    self.transport.write(stamped_chunk(frame, wall_clock_us()))
                else:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(frame), frame))
                # Later than MIN_SLEEP_S from now (take_alone): back on the clock. Through call_at, the
                # one place that knows the clock's ticks (~0.13 us more per event than reading its
                # dict here, measured; a copy of its rounding would send frames early if it changed).
                self.clock.call_at(alone[2], self.on_tick)
                return
            waiting = self._write_due(now, alone)
        except BaseException as exc:  # the task that awaits the outcome raises it, as play() would
            self.outcome.set_exception(exc)
            return
        if waiting is not None:
            self.outcome.set_result(waiting)
        elif self.timeline.ended:
            self.outcome.set_result(None)
        else:
            self._schedule(now)

    def _write_due(
        self, now: float, alone: tuple[dict[str, Any], bytes, float] | None
    ) -> tuple[Coroutine[Any, Any, None], Any] | None:
        playback = self.playback
        if alone is None:
            batch = self.timeline.take(now)
        else:
            batch = stamped([alone[:2]]) if self.stamp else [alone[:2]]
        if not batch:
            return None
        if playback.record is not None:
            recorded = [frame for frame in batch if frame[0]["type"] not in UNRECORDED]
            if recorded:
                playback.record(recorded)
        body = batch[0][1] if len(batch) == 1 else b"".join([frame for _event, frame in batch])
        if self.timeline.ended and playback.trailer:
            body += playback.trailer
        if self.direct is not None and self.direct.write(body):
            return None
        return self._send(body)

    def _send(self, body: bytes) -> tuple[Coroutine[Any, Any, None], Any] | None:
        """Drive the server's ``send`` of a chunk: None when it is done, else (the send, what it waits for)."""
        sending = self.send({"type": "http.response.body", "body": body, "more_body": True})
        try:
            waiting_for = sending.send(None)  # type: ignore[attr-defined]
        except StopIteration:
            return None
        return sending, waiting_for  # type: ignore[return-value]


class DirectBody:
    """For uvicorn's httptools server, a chunk of a started chunked body written straight to the
    connection's transport, framed as uvicorn's ``send`` frames it (one write: size line, data, CRLF),
    unless the server paused writing: the chunk then goes through ``send``, which waits. It saves each
    write the coroutine, the ASGI message and uvicorn's checks (docs/simulator.md, "Load generator")."""

    __slots__ = ("cycle", "flow", "transport")

    def __init__(self, cycle: Any, flow: Any, transport: Any) -> None:
        self.cycle = cycle
        self.flow = flow
        self.transport = transport

    @classmethod
    def of(cls, send: Send) -> DirectBody | None:
        """The direct writer of ``send``'s response, or None: any other server than uvicorn's httptools, or a
        response not started, or not chunked, or a uvicorn whose request state is not as expected."""
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
        return cls(cycle, flow, transport) if ready else None

    def write(self, body: bytes) -> bool:
        """Write ``body`` as one chunk; False when it must go through ``send`` (writing is paused)."""
        if self.cycle.disconnected:
            return True  # as uvicorn's send: nothing more goes out (the request's task sees the disconnect)
        if self.flow.write_paused:
            return False
        self.transport.write(b"%x\r\n%s\r\n" % (len(body), body))
        return True


def stamped_chunk(frame: bytes, now_us: int) -> bytes:
    """The HTTP chunk of ``frame`` with ``sim_stamp`` (``now_us``) as its last key: the chunk framing of
    ``frame[:-3] + stamp_suffix(now_us)`` in one formatting for any time of ten digits of seconds."""
    seconds, micros = divmod(now_us, 1_000_000)
    if 1_000_000_000 <= seconds < 10_000_000_000:
        if micros % 10:  # nine times in ten: six digits, no trailing zero to cut
            # ',"sim_stamp":' 13 bytes, ten digits, '.', six digits, '}\n\n' in place of the frame's last three
            return b'%x\r\n%.*b,"sim_stamp":%d.%06d}\n\n\r\n' % (
                len(frame) + 30, len(frame) - 3, frame, seconds, micros
            )
        fraction = (b"%06d" % micros).rstrip(b"0") or b"0"  # as stamp_suffix cuts it
        return b'%x\r\n%.*b,"sim_stamp":%d.%b}\n\n\r\n' % (
            len(frame) + 24 + len(fraction), len(frame) - 3, frame, seconds, fraction
        )
    body = frame[:-3] + stamp_suffix(now_us)
    return b"%x\r\n%s\r\n" % (len(body), body)


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
