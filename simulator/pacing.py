"""Timing: turn a scenario's pause hints into delays and play steps out as batches of frames.

Delays come from a seeded RNG (same seed, same rhythm). Token gaps are log-normal around
``1 / tokens_per_s`` with occasional hiccups; the first token never lands before
``first_token_ms``; hosted-tool work shrinks with faster token rates. Unthrottled pacing
(``sim_tokens_per_s: "max"``) skips all sleeping and packs ~64 KiB of frames per batch.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from simulator.builders import HIDDEN, NOW, QUEUE, START, TOKEN, WORK, Step

_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
BATCH_BYTES = 64 * 1024
# Below this a wait is not worth a sleep: frames due within it go out together.
MIN_SLEEP_S = 0.002

Frame = tuple[dict[str, Any], bytes]


def to_json(value: Any) -> str:
    """Compact one-line JSON, UTF-8 kept as is (as the real API sends it)."""
    return _ENCODER.encode(value)


def encode_sse(event: dict[str, Any]) -> bytes:
    """``event: <type>\\ndata: <json>\\n\\n`` — the Responses API framing."""
    return f"event: {event['type']}\ndata: {_ENCODER.encode(event)}\n\n".encode()


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
    """Yield batches of (event, frame) when they are due; a batch holds every frame due now."""
    loop = asyncio.get_running_loop()
    batch: list[Frame] = []
    size = 0
    stamped = _stamping if pacing.stamp else None
    if pacing.unthrottled:
        for step in steps:
            event = stamped(step.event) if stamped else step.event
            frame = encode(event)
            batch.append((event, frame))
            size += len(frame)
            if size >= BATCH_BYTES:
                yield batch
                batch, size = [], 0
                await asyncio.sleep(0)
        if batch:
            yield batch
        return
    start = loop.time()
    due = 0.0
    for step, delay in pacing.delays(steps):
        due += delay
        wait = due - (loop.time() - start)
        if wait > MIN_SLEEP_S:
            if batch:
                yield batch
                batch, size = [], 0
                wait = due - (loop.time() - start)
            if wait > 0:
                await asyncio.sleep(wait)
        event = stamped(step.event) if stamped else step.event
        frame = encode(event)
        batch.append((event, frame))
        size += len(frame)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _stamping(event: dict[str, Any]) -> dict[str, Any]:
    return {**event, "sim_stamp": round(time.time(), 6)}
