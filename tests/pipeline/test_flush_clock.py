"""The process-wide flush clock: who is flushed on a tick, how the interval adapts, failures."""

from __future__ import annotations

import asyncio

import pytest

from streams.pipeline import flush_clock as flushclock
from streams.pipeline.flush_clock import FlushClock, interval_for


class FakeRun:
    def __init__(self, due: bool = True, fails: bool = False) -> None:
        self.due, self.fails = due, fails
        self.flushed = 0
        self.error: BaseException | None = None

    def flush_due(self, now: float) -> bool:
        return self.due

    async def flush(self) -> None:
        self.flushed += 1
        if self.fails:
            raise RuntimeError("database is gone")

    def flush_failed(self, error: BaseException) -> None:
        self.error = error


def test_the_interval_stays_at_the_base_for_a_few_runs_and_grows_to_the_maximum_for_many():
    assert interval_for(1, 25, 100) == pytest.approx(0.025)
    assert interval_for(flushclock.RUNS_PER_BASE_INTERVAL, 25, 100) == pytest.approx(0.025)
    assert interval_for(2 * flushclock.RUNS_PER_BASE_INTERVAL, 25, 100) == pytest.approx(0.050)
    assert interval_for(200 * flushclock.RUNS_PER_BASE_INTERVAL, 25, 100) == pytest.approx(0.100)
    # A maximum below the base never shortens the base.
    assert interval_for(500, 25, 10) == pytest.approx(0.025)


async def test_a_tick_flushes_the_due_runs_only_and_one_failure_does_not_stop_the_others():
    clock = FlushClock()
    due, idle, broken = FakeRun(), FakeRun(due=False), FakeRun(fails=True)
    clock.runs.update({due, idle, broken})
    await clock.tick()
    assert (due.flushed, idle.flushed, broken.flushed) == (1, 0, 1)
    assert isinstance(broken.error, RuntimeError) and due.error is None


async def test_the_clock_ticks_while_runs_are_registered_and_stops_after_the_last(settings):
    settings.STREAMSCOPE_FLUSH_INTERVAL_MS = 5
    clock = FlushClock()
    run = FakeRun()
    clock.register(run)
    await asyncio.sleep(0.1)
    assert run.flushed >= 3
    clock.unregister(run)
    await asyncio.sleep(0.05)
    assert clock._task.done()
    flushed = run.flushed
    clock.register(run)  # a new run starts the clock again
    await asyncio.sleep(0.05)
    assert run.flushed > flushed
    clock.unregister(run)


async def test_each_event_loop_has_its_own_clock():
    assert flushclock.flush_clock() is flushclock.flush_clock()


class RoundRun(FakeRun):
    """A run whose batch goes in the clock's round; notes the outcome it is told."""

    def __init__(self, run_id: int, breaks: bool = False) -> None:
        super().__init__()
        self.run_id, self.breaks = run_id, breaks
        self.outcomes: list[BaseException | None] = []

    def flush_due(self, now: float) -> bool:
        if self.breaks:
            raise RuntimeError("this run is in trouble")
        return True

    def take_batch(self) -> flushclock.RoundBatch:
        return flushclock.RoundBatch(self.run_id, [], None, 0.0)

    def batch_done(self, batch, error):
        self.outcomes.append(error)


async def test_a_round_cancelled_before_it_began_still_tells_each_run_its_outcome():
    clock = FlushClock()
    in_round, alone = RoundRun(1), FakeRun()
    clock.runs.update({in_round, alone})  # one alone: the round goes through gather as a task
    tick = asyncio.ensure_future(clock.tick())
    await asyncio.sleep(0)  # the tick took the batch and awaits gather; the round has not begun
    tick.cancel()
    await asyncio.gather(tick, return_exceptions=True)
    assert len(in_round.outcomes) == 1 and isinstance(in_round.outcomes[0], asyncio.CancelledError)


async def test_a_run_that_raises_when_asked_does_not_keep_the_others_from_their_round(monkeypatch):
    async def stored(batches):
        return [None] * len(batches)

    monkeypatch.setattr(flushclock.store, "write_round", stored)
    clock = FlushClock()
    broken, fine = RoundRun(1, breaks=True), RoundRun(2)
    clock.runs.update({broken, fine})
    await clock.tick()
    assert fine.outcomes == [None] and broken.outcomes == []
