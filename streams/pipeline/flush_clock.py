"""One flush clock per event loop for every run executing on it.

Each run buffers the events it reads; the clock ticks and flushes every run that has something
to write (or owes the store a heartbeat), all in the same round, so their batches land in one
group commit (streams.pipeline.store.GroupWriter) and go out as one publish per run. One timer for the
process instead of a ``wait_for`` loop per run: with 200 runs that was 8,000 timer tasks a
second doing nothing but waking up.

The interval adapts to how many runs share the process: the base interval (25 ms) while there are
up to :data:`RUNS_PER_BASE_INTERVAL`, growing in proportion beyond that, up to the maximum
(100 ms). A lone fast run keeps its 25 ms delay; hundreds of slow ones get a quarter of the
batches, each four times fuller, which is what keeps a busy process from saturating (see
docs/performance.md). A run whose buffer fills does not wait for the tick (RunExecutor.kick).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
import weakref
from typing import Protocol

from django.conf import settings

log = logging.getLogger(__name__)

RUNS_PER_BASE_INTERVAL = 50


class Flushable(Protocol):
    def flush_due(self, now: float) -> bool: ...

    async def flush(self) -> None: ...

    def flush_failed(self, error: BaseException) -> None: ...


def interval_for(active: int, base_ms: float, max_ms: float) -> float:
    """Seconds between ticks for ``active`` runs (see the module's docstring)."""
    scaled = base_ms * max(1.0, active / RUNS_PER_BASE_INTERVAL)
    return min(max(base_ms, max_ms), scaled) / 1000.0


class FlushClock:
    def __init__(self) -> None:
        self.runs: set[Flushable] = set()
        self.ticks = 0
        self._task: asyncio.Task | None = None

    def register(self, run: Flushable) -> None:
        self.runs.add(run)
        if self._task is None or self._task.done():
            # A context of its own: the run that starts the clock may belong to a request whose
            # context dies with it (see streams.live.launcher).
            self._task = asyncio.get_running_loop().create_task(
                self._tick_forever(), name="streamscope-flush-clock", context=contextvars.Context()
            )

    def unregister(self, run: Flushable) -> None:
        self.runs.discard(run)

    def interval(self) -> float:
        return interval_for(len(self.runs), settings.STREAMSCOPE_FLUSH_INTERVAL_MS,
                            settings.STREAMSCOPE_FLUSH_INTERVAL_MAX_MS)

    async def _tick_forever(self) -> None:
        # Fixed rate: a round still writing does not hold up the next tick; a run whose own
        # flush is in flight is not due (RunExecutor.flush_due), so no run queues two flushes.
        rounds: set[asyncio.Task] = set()
        while self.runs:
            await asyncio.sleep(self.interval())
            round_ = asyncio.ensure_future(self.tick())
            rounds.add(round_)
            round_.add_done_callback(self._round_done(rounds))

    @staticmethod
    def _round_done(rounds: set[asyncio.Task]):
        def done(round_: asyncio.Task) -> None:
            rounds.discard(round_)
            if not round_.cancelled() and round_.exception() is not None:  # the clock outlives any round
                log.error("flush clock: a round failed", exc_info=round_.exception())
        return done

    async def tick(self) -> None:
        """Flush every run that is due, together; returns when all their batches are stored."""
        self.ticks += 1
        now = time.monotonic()
        due = [run for run in self.runs if run.flush_due(now)]
        if due:
            await asyncio.gather(*(self._flush(run) for run in due))

    @staticmethod
    async def _flush(run: Flushable) -> None:
        try:
            await run.flush()
        except Exception as exc:
            run.flush_failed(exc)


_clocks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, FlushClock] = weakref.WeakKeyDictionary()


def flush_clock() -> FlushClock:
    """The clock of the running event loop."""
    loop = asyncio.get_running_loop()
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = FlushClock()
    return clock
