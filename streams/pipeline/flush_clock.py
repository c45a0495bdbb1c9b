"""One flush clock per event loop for every run executing on it.

Each run buffers the events it reads; the clock ticks and flushes every run that has something
to write (or owes the store a heartbeat), all in the same round: every due run's batch is taken
at once (``take_batch``), the round stores them in one transaction, publishes them in one publish
round and hands each run its outcome (``batch_done``). No task, lock or future per run per tick:
with hundreds of runs those were most of the flushing's CPU (docs/performance.md). A run that
cannot give its batch away (``take_batch`` returns None, or has none) flushes itself, alongside.
One timer for the process instead of a ``wait_for`` loop per run: with 200 runs that was 8,000
timer tasks a second doing nothing but waking up.

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
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

from streams.pipeline import store
from streams.pipeline.broadcast import listening, publish_round
from streams.pipeline.per_loop import PerLoop
from streams.protocol.records import encode_rows

log = logging.getLogger(__name__)

RUNS_PER_BASE_INTERVAL = 50


@dataclass(slots=True)
class RoundBatch:
    """One run's part of a round: its rows and row fields to store, the same rows to publish
    (encoded only for a run someone hears)."""

    run_id: int
    rows: list[store.Row]
    fields: dict[str, Any] | None
    taken_at: float
    settled: bool = False  # its run was told the round's outcome (batch_done)

    @property
    def first_seq(self) -> int:
        return self.rows[0][1]

    def published(self) -> tuple[int, int, list[str]]:
        """``(run_id, first_seq, encoded rows)`` to publish the stored batch, the rows let go: from
        here only their text as published is wanted. Runs ending together are stored together and
        then published together, and each one's last events carry its whole output text four times
        (the Responses API's .done events and response.completed): with the rows and their encoding
        of every such run held at once, the event loop's heap grew ~25 KiB per run while 1,000 runs
        ended (~2 KiB letting each run's rows go), and kept it, free, after (bench/many.py)."""
        first, rows = self.first_seq, self.rows
        self.rows = []
        return self.run_id, first, encode_rows(rows)


class Flushable(Protocol):
    def flush_due(self, now: float) -> bool: ...

    async def flush(self) -> None: ...

    def flush_failed(self, error: BaseException) -> None: ...


class RoundFlushable(Flushable, Protocol):
    def take_batch(self) -> RoundBatch | None:
        """The buffer, handed to the round (the run flushes nothing else until batch_done)."""

    def batch_done(self, taken: RoundBatch, error: BaseException | None) -> Awaitable[Any] | None:
        """Stored and published, or not stored (``error``); returns what is left to await, if anything."""


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
        taken: list[tuple[RoundFlushable, RoundBatch]] = []
        alone: list[Flushable] = []
        for run in list(self.runs):
            try:
                if not run.flush_due(now):
                    continue
                take = getattr(run, "take_batch", None)
                batch = take() if take is not None else None
            except Exception:  # one run's trouble must not keep the others' batches from their round
                log.exception("flush clock: run %s could not be flushed", getattr(run, "run_id", "?"))
                continue
            if batch is None:
                alone.append(run)
            else:
                taken.append((run, batch))
        try:
            if alone:
                await asyncio.gather(self._round(taken), *(self._flush(run) for run in alone))
            elif taken:
                await self._round(taken)
        finally:
            # Cancelled before the round began (gather's task never ran): no run may wait for it.
            for run, batch in taken:
                if not batch.settled:
                    batch.settled = True
                    run.batch_done(batch, asyncio.CancelledError("the flush round was cancelled"))

    @staticmethod
    async def _round(taken: list[tuple[RoundFlushable, RoundBatch]]) -> None:
        """Store every taken batch's events in one transaction, publish the stored ones in one round,
        then write the runs' rows (counts, heartbeat, text) in a second transaction: the rows are
        not what viewers wait for. With 1,000 runs a round's 1,000 row updates (about one in five
        rewriting its whole text, which PostgreSQL re-indexed for search until migration 0013)
        took 0.3-0.6 s of a ~0.9 s store, and every event waited for them (docs/performance.md).
        A row is never ahead of the events it counts. The runs are told their outcome after the
        rows are written, so a round's rows still hold its runs' next batch (12-120 ms at 1,000
        runs since 0013)."""
        if not taken:
            return
        results: list[BaseException | None] | None = None
        try:
            with_rows = [batch for _, batch in taken if batch.rows]
            stored = await store.write_round([(b.run_id, b.rows, None) for b in with_rows]) if with_rows else []
            outcome = {id(batch): error for batch, error in zip(with_rows, stored)}
            results = [outcome.get(id(batch)) for _, batch in taken]
            listened = listening()  # asked once for the round, not once per run
            await publish_round([b.published() for (_, b), error in zip(taken, results)
                                 if error is None and b.rows and listened(b.run_id)])
            await _write_rows([b for (_, b), error in zip(taken, results) if error is None and b.fields is not None])
        except BaseException as exc:  # cancelled: no run may wait for this round for ever
            if results is None:
                results = [exc] * len(taken)
            raise
        finally:
            left = []
            for (run, batch), error in zip(taken, results or ()):
                batch.settled = True
                try:
                    follow = run.batch_done(batch, error)
                except Exception:
                    log.exception("flush clock: run %s failed to take its batch's outcome", batch.run_id)
                    continue
                if follow is not None:
                    left.append(follow)
        if left:
            for error in await asyncio.gather(*left, return_exceptions=True):
                if isinstance(error, Exception):
                    log.error("flush clock: storing a run's moderation flags failed", exc_info=error)

    @staticmethod
    async def _flush(run: Flushable) -> None:
        try:
            await run.flush()
        except Exception as exc:
            run.flush_failed(exc)


async def _write_rows(batches: list[RoundBatch]) -> None:
    """The rows of a round's runs whose events are stored. A row that could not be written is not
    counted as written (its batch's fields dropped): its run writes it with its next batch."""
    if not batches:
        return
    results: list[BaseException | None] | None = None
    try:
        results = await store.write_round([(b.run_id, [], b.fields) for b in batches])
    except Exception as exc:
        results = [exc] * len(batches)
    finally:
        for batch, error in zip(batches, results or [None] * len(batches)):
            if results is None or error is not None:  # cancelled, or failed
                batch.fields = None
                if error is not None:
                    log.warning("run %s: writing its row failed (written with its next batch): %r",
                                batch.run_id, error)


_clocks = PerLoop(FlushClock)


def flush_clock() -> FlushClock:
    """The clock of the running event loop."""
    return _clocks.get()
