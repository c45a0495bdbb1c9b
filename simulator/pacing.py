"""Timing: turn a scenario's pause hints into delays and play steps out as batches of frames.

Delays come from a seeded RNG (same seed, same rhythm). Token gaps are log-normal around
``1 / tokens_per_s`` with occasional hiccups; the first token never lands before
``first_token_ms``; hosted-tool work shrinks with faster token rates. Unthrottled pacing
(``sim_tokens_per_s: "max"``) skips all sleeping and packs ~64 KiB of frames per batch.

By default every frame is written at its own time, as a provider streaming token by token does
(the gaps a viewer sees are the simulator's gaps). A load generator may ask a stream to write at
most once per ``write_interval_s`` instead (``sim_write_interval_ms``, or the process default
``STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS``): frames that fall due in between go out together at
the end of it, while the first frame and any frame after a pause go out when due. A write costs
the server far more CPU than a frame (a syscall and the server's write path, see docs/simulator.md
"Load generator"), so that is what lets one process pace 10,000 events/s cheaply. Waits are served
by one shared clock per process (1 ms ticks; a 5 ms grid for batched streams) rather than a timer
per stream per write; on the direct ASGI path the clock writes plain streams itself
(:mod:`simulator.playback`).
"""

from __future__ import annotations

import asyncio
import functools
import json
import math
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any

from simulator.builders import HIDDEN, NOW, QUEUE, START, TOKEN, WORK, Step, text_delta_template

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# How _ENCODER writes a string (ensure_ascii=False): the C function when there is one.
_QUOTE = json.encoder.encode_basestring
BATCH_BYTES = 64 * 1024
# A paced stream's frames are built this many at a time, ahead of their time (Timeline): the builder's
# generators run warm for a block, where one frame at a time each write ran them cold after the clock's sleep
# (at one write per event 16 -> 64 cost ~2 us less per event; ~42 KiB per stream held ahead by the server, 64 with
# every event whole, 25 at 16).
FRAMES_AHEAD = 64
# Below this a wait is not worth a sleep: frames due within it go out together.
MIN_SLEEP_S = 0.002
# A stream writes at most once per this (sim_write_interval_ms); frames due in between go out together.
# 0: every frame at its own time (the default; a load generator sets a larger one).
DEFAULT_WRITE_INTERVAL_S = 0.0
# The shared clock's granularity: streams due at about the same moment are written on the same tick
# (1 ms: a frame goes out at most that late, well inside a token gap).
CLOCK_TICK_S = 0.001
# Streams that batch their writes wake on a coarser grid of the same clock: fewer, fuller writes.
BATCHED_TICK_S = 0.005

Frame = tuple[dict[str, Any], bytes]
_ceil = math.ceil


def to_json(value: Any) -> str:
    """Compact one-line JSON, UTF-8 kept as is (as the real API sends it)."""
    return _ENCODER.encode(value)


def encode_sse(event: dict[str, Any]) -> bytes:
    """``event: <type>\\ndata: <json>\\n\\n`` — the Responses API framing."""
    if event["type"] == "response.output_text.delta" and tuple(event) == _TEXT_DELTA_KEYS:
        frame = _text_delta_frame(event)
        if frame is not None:
            return frame
    return f"event: {event['type']}\ndata: {_ENCODER.encode(event)}\n\n".encode()


# Most events of a stream are plain text deltas: the builder writes their frames with them (Step.frame);
# one built elsewhere is written from the same template, which gives the encoder's bytes.
_TEXT_DELTA_KEYS = (
    "type", "sequence_number", "item_id", "output_index", "content_index", "logprobs", "delta", "obfuscation",
)


def _text_delta_frame(event: dict[str, Any]) -> bytes | None:
    """The frame of a text delta without logprobs, or None when the event is not that plain."""
    seq, item_id, output_index, content_index = (
        event["sequence_number"], event["item_id"], event["output_index"], event["content_index"]
    )
    delta, obfuscation = event["delta"], event["obfuscation"]
    if (
        event["logprobs"] != []
        or type(seq) is not int
        or type(output_index) is not int
        or type(content_index) is not int
        or type(item_id) is not str
        or type(delta) is not str
        or type(obfuscation) is not str
    ):
        return None
    quoted = _QUOTE
    template = text_delta_template(item_id, output_index, content_index, obfuscation=True)
    return template % (seq, quoted(delta).encode(), quoted(obfuscation).encode())


def encode_data_only(chunk: dict[str, Any]) -> bytes:
    """``data: <json>\\n\\n`` — the Chat Completions framing."""
    return f"data: {_ENCODER.encode(chunk)}\n\n".encode()


@dataclass(frozen=True)
class Pacing:
    tokens_per_s: float
    first_token_ms: float
    jitter: float
    seed: str
    unthrottled: bool = False
    # Add ``sim_stamp`` (wall-clock seconds) to each event as it is written: delay benchmarks.
    stamp: bool = False
    # At most one write per stream per interval, on the shared clock (0: each frame at its own time).
    write_interval_s: float = DEFAULT_WRITE_INTERVAL_S

    @classmethod
    def unthrottled_pacing(cls) -> Pacing:
        return cls(tokens_per_s=math.inf, first_token_ms=0, jitter=0, seed="", unthrottled=True)

    def delays(self, steps: Iterable[Step]) -> Iterator[tuple[Step, float]]:
        """Each step with the seconds to wait before sending it."""
        if self.unthrottled:
            for step in steps:
                yield step, 0.0
            return
        rng = random.Random(self.seed + ":timing")
        gap = 1.0 / self.tokens_per_s
        work_scale = min(1.0, 60.0 / self.tokens_per_s)
        first_token_s = self.first_token_ms / 1000
        sigma = self.jitter
        elapsed = 0.0
        waiting_for_first_token = True

        def wobble() -> float:
            if sigma <= 0:
                return 1.0
            factor = math.exp(sigma * rng.gauss(0, 1) - sigma * sigma / 2)
            if rng.random() < 0.02:
                factor *= rng.uniform(4, 10)
            return factor

        for step in steps:
            pause = step.pause
            if pause == NOW:
                delay = 0.0
            elif pause == TOKEN:
                delay = gap * wobble() if sigma > 0 else gap
                if waiting_for_first_token:
                    delay = max(delay, first_token_s - elapsed)
                    waiting_for_first_token = False
            elif pause == WORK:
                delay = step.amount / 1000 * work_scale * (wobble() if sigma else 1.0)
            elif pause == HIDDEN:
                delay = step.amount * gap
            elif pause == START:
                delay = first_token_s * rng.uniform(0.3, 0.5)
            elif pause == QUEUE:
                delay = first_token_s * rng.uniform(0.2, 0.4)
            else:
                delay = 0.0
            elapsed += delay
            yield step, delay

    def total_seconds(self, steps: Iterable[Step]) -> float:
        return sum(delay for _step, delay in self.delays(steps))


async def play(
    steps: Iterable[Step],
    pacing: Pacing,
    encode: Callable[[dict[str, Any]], bytes] = encode_sse,
) -> AsyncIterator[list[Frame]]:
    """Yield batches of (event, frame) when they are due; a batch holds every frame due now.

    With ``pacing.stamp`` the frames carry ``sim_stamp`` (the events stay as built)."""
    if not pacing.unthrottled:
        async for batch in _paced(steps, pacing, encode):  # stamped by the timeline
            yield batch
        return
    async for batch in _unthrottled(steps, encode):
        yield stamped(batch) if pacing.stamp else batch


def stamped(batch: list[Frame]) -> list[Frame]:
    """The frames with ``sim_stamp``, the wall-clock time now, as their last key."""
    suffix = stamp_suffix(wall_clock_us())
    return [(event, frame[:-3] + suffix) for event, frame in batch]


async def _unthrottled(
    steps: Iterable[Step], encode: Callable[[dict[str, Any]], bytes]
) -> AsyncIterator[list[Frame]]:
    batch: list[Frame] = []
    size = 0
    prebuilt = encode is encode_sse  # the builder's frames (Step.frame) are SSE frames
    for step in steps:
        frame = step.frame if prebuilt and step.frame else encode(step.event)
        batch.append((step.event, frame))
        size += len(frame)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
            await asyncio.sleep(0)
    if batch:
        yield batch


async def _paced(
    steps: Iterable[Step], pacing: Pacing, encode: Callable[[dict[str, Any]], bytes]
) -> AsyncIterator[list[Frame]]:
    loop = asyncio.get_running_loop()
    clock = shared_clock(loop) if pacing.write_interval_s > 0 else None
    timeline = Timeline(steps, pacing, encode, loop.time())
    while not timeline.ended:
        wait = timeline.wake_at - loop.time()
        if wait > MIN_SLEEP_S:
            if clock is not None:
                await clock.wake_at(timeline.wake_at, BATCHED_TICK_S)
            else:
                await asyncio.sleep(wait)
        batch = timeline.take(loop.time())
        if batch:
            yield batch


class Timeline:
    """A paced stream's frames and the loop times they are due: ``take(now)`` gives the next batch
    (stamped when the pacing asks for ``sim_stamp``), ``wake_at`` when to ask again. Played by
    :func:`play` in a task of its own, or straight from the shared clock (:mod:`simulator.playback`),
    which takes a frame that goes out alone with ``take_alone``."""

    # Slots: the clock's pass reads a timeline once per write, cold after its 1 ms sleep; a slot is read from the
    # object itself, an attribute of a dict-backed instance from a values array elsewhere in memory.
    __slots__ = ("_ahead", "_built_until", "_delays", "_encode", "_interval", "_next_write", "_position",
                 "_prebuilt", "_stamp", "ended")

    def __init__(
        self, steps: Iterable[Step], pacing: Pacing, encode: Callable[[dict[str, Any]], bytes], start: float
    ) -> None:
        self._delays = pacing.delays(steps)
        self._encode = encode
        self._prebuilt = encode is encode_sse  # the builder's frames (Step.frame) are SSE frames
        self._interval = pacing.write_interval_s
        self._stamp = pacing.stamp
        self._built_until = start  # the due time of the last frame built
        self._ahead: list[tuple[float, dict[str, Any], bytes]] = []  # (due, event, frame), in order
        self._position = 0  # of the next frame in _ahead
        self._next_write = start
        self.ended = False
        self._build()

    def _build(self) -> None:
        """The next ``FRAMES_AHEAD`` frames with their due times (fewer at the end; none: ``ended``).
        Built a block at a time, the steps' generators run in one go instead of once per write."""
        encode = self._encode
        prebuilt = self._prebuilt
        due = self._built_until
        ahead = []
        for step, delay in islice(self._delays, FRAMES_AHEAD):
            due += delay
            ahead.append((due, step.event, step.frame if prebuilt and step.frame else encode(step.event)))
        self._built_until = due
        self._ahead = ahead
        self._position = 0
        self.ended = not ahead

    @property
    def wake_at(self) -> float:
        """When the next batch is due: its first frame's time, or the end of the write interval."""
        return max(self._ahead[self._position][0], self._next_write) if not self.ended else self._next_write

    def take(self, now: float) -> list[Frame]:
        """The next frame (the caller waited for it) and every later one due within ``MIN_SLEEP_S`` of
        ``now``, up to ``BATCH_BYTES``."""
        batch: list[Frame] = []
        size = 0
        ahead, position = self._ahead, self._position
        while not self.ended:
            due, event, frame = ahead[position]
            if batch and due - now > MIN_SLEEP_S:
                break
            batch.append((event, frame))
            size += len(frame)
            position += 1
            if position == len(ahead):
                self._build()
                ahead, position = self._ahead, 0
            if size >= BATCH_BYTES:
                break
        self._position = position
        if batch and self._interval:
            self._next_write = now + self._interval
        return stamped(batch) if self._stamp and batch else batch

    def take_alone(self, now: float) -> tuple[dict[str, Any], bytes, float] | None:
        """What ``take(now)`` gives when that is one frame, as (event, frame not stamped yet, when the next
        is due): the usual write of a paced stream at one write per event, without a batch. None, and
        nothing taken, when it may be more (a write interval, the frame after it due within
        ``MIN_SLEEP_S`` of ``now``, or the end of the frames built so far)."""
        position = self._position + 1
        ahead = self._ahead
        if self._interval or position >= len(ahead):
            return None
        following = ahead[position][0]
        if following - now <= MIN_SLEEP_S:
            return None
        self._position = position
        _due, event, frame = ahead[position - 1]
        return event, frame, following


def stamp_suffix(now_us: int) -> bytes:
    """What replaces a frame's closing ``}\\n\\n`` to give it ``"sim_stamp"`` (wall-clock seconds, to
    the microsecond ``now_us``) as its last key: the bytes encoding the event with that key added would
    give (the float's shortest form, for any wall-clock time), without encoding it again and without
    rounding and formatting a float, which cost more than the rest of a frame's stamping."""
    seconds, micros = divmod(now_us, 1_000_000)
    return b',"sim_stamp":%d.%s}\n\n' % (seconds, (b"%06d" % micros).rstrip(b"0") or b"0")


def wall_clock_us() -> int:
    """The wall clock (``time.time()``) in whole microseconds, rounded."""
    return (time.time_ns() + 500) // 1000


class SharedClock:
    """Calls back the waiting streams of one event loop on shared ticks (every ``CLOCK_TICK_S``): one
    timer per tick for the process instead of one per stream per write."""

    __slots__ = ("loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[int, list[Callable[[], None]]] = {}

    def call_at(self, when: float, callback: Callable[[], None], every_s: float = CLOCK_TICK_S) -> None:
        """Call ``callback`` on the first tick at or after ``when`` (loop time), on a grid of
        ``every_s`` (a multiple of the clock's tick)."""
        if every_s == CLOCK_TICK_S:  # every paced stream's next write at one write per event: the same tick
            tick = _ceil(when / CLOCK_TICK_S)
        else:
            grid = round(every_s / CLOCK_TICK_S)
            tick = _ceil(when / CLOCK_TICK_S / grid) * grid
        callbacks = self.waiting.get(tick)
        if callbacks is None:
            callbacks = self.waiting[tick] = []
            self.loop.call_at(tick * CLOCK_TICK_S, self._fire, tick)
        callbacks.append(callback)

    def wake_at(self, when: float, every_s: float = CLOCK_TICK_S) -> asyncio.Future[None]:
        """A future done on the first tick at or after ``when``. Each waiter has its own future, so
        cancelling one stream never touches the others."""
        future = self.loop.create_future()
        self.call_at(when, functools.partial(_wake, future), every_s)
        return future

    def _fire(self, tick: int) -> None:
        for callback in self.waiting.pop(tick, ()):
            callback()


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedClock] = weakref.WeakKeyDictionary()


def shared_clock(loop: asyncio.AbstractEventLoop) -> SharedClock:
    clock = _CLOCKS.get(loop)
    if clock is None:
        clock = _CLOCKS[loop] = SharedClock(loop)
    return clock
