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
the server far more CPU than a frame (Twisted's write path and a syscall, see docs/simulator.md
"Load generator"), so that is what lets one process pace 10,000 events/s cheaply. Waits are served
by one shared clock per process, ticking every 5 ms, rather than a timer per stream per write.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from simulator.builders import HIDDEN, NOW, QUEUE, START, TOKEN, WORK, Step

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# How _ENCODER writes a string (ensure_ascii=False): the C function when there is one.
_QUOTE = json.encoder.encode_basestring
BATCH_BYTES = 64 * 1024
# Below this a wait is not worth a sleep: frames due within it go out together.
MIN_SLEEP_S = 0.002
# A stream writes at most once per this (sim_write_interval_ms); frames due in between go out together.
# 0: every frame at its own time (the default; a load generator sets a larger one).
DEFAULT_WRITE_INTERVAL_S = 0.0
# The shared clock's granularity: streams waiting for about the same moment wake on the same tick.
CLOCK_TICK_S = 0.005

Frame = tuple[dict[str, Any], bytes]


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


# Most events of a stream are plain text deltas: they are written from a template, which gives the
# encoder's bytes (same keys in the same order, same string escaping) at a fraction of its cost.
_TEXT_DELTA_KEYS = (
    "type", "sequence_number", "item_id", "output_index", "content_index", "logprobs", "delta", "obfuscation",
)
_TEXT_DELTA = (
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":%d,'
    '"item_id":%s,"output_index":%d,"content_index":%d,"logprobs":[],"delta":%s,"obfuscation":%s}\n\n'
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
    return (
        _TEXT_DELTA % (seq, quoted(item_id), output_index, content_index, quoted(delta), quoted(obfuscation))
    ).encode()


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
                delay = gap * wobble()
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
    if pacing.unthrottled:
        batches = _unthrottled(steps, encode)
    else:
        batches = _paced(steps, pacing, encode)
    async for batch in batches:
        if pacing.stamp:
            suffix = stamp_suffix(round(time.time(), 6))
            batch = [(event, frame[:-3] + suffix) for event, frame in batch]
        yield batch


async def _unthrottled(
    steps: Iterable[Step], encode: Callable[[dict[str, Any]], bytes]
) -> AsyncIterator[list[Frame]]:
    batch: list[Frame] = []
    size = 0
    for step in steps:
        frame = encode(step.event)
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
    batch: list[Frame] = []
    size = 0
    start = loop.time()
    due = 0.0
    next_write = start
    for step, delay in pacing.delays(steps):
        due += delay
        if start + due - loop.time() > MIN_SLEEP_S:
            if batch:
                yield batch
                batch, size = [], 0
                next_write = loop.time() + pacing.write_interval_s
            if clock is not None:
                await clock.wake_at(max(start + due, next_write))
            else:
                wait = start + due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
        frame = encode(step.event)
        batch.append((step.event, frame))
        size += len(frame)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def stamp_suffix(now: float) -> bytes:
    """What replaces a frame's closing ``}\\n\\n`` to give it ``"sim_stamp": now`` as its last key:
    the bytes encoding the event with that key added would give, without encoding it again."""
    return b',"sim_stamp":%s}\n\n' % repr(now).encode()


class SharedClock:
    """Wakes the waiting streams of one event loop on shared ticks (every ``CLOCK_TICK_S``): one timer
    per tick for the process instead of one per stream per write."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.waiting: dict[float, list[asyncio.Future[None]]] = {}

    def wake_at(self, when: float) -> asyncio.Future[None]:
        """A future done on the first tick at or after ``when`` (loop time). Each waiter has its
        own future, so cancelling one stream never touches the others."""
        tick = math.ceil(when / CLOCK_TICK_S) * CLOCK_TICK_S
        future = self.loop.create_future()
        waiters = self.waiting.get(tick)
        if waiters is None:
            waiters = self.waiting[tick] = []
            self.loop.call_at(tick, self._fire, tick)
        waiters.append(future)
        return future

    def _fire(self, tick: float) -> None:
        for future in self.waiting.pop(tick, ()):
            if not future.done():
                future.set_result(None)


_CLOCKS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, SharedClock] = weakref.WeakKeyDictionary()


def shared_clock(loop: asyncio.AbstractEventLoop) -> SharedClock:
    clock = _CLOCKS.get(loop)
    if clock is None:
        clock = _CLOCKS[loop] = SharedClock(loop)
    return clock
