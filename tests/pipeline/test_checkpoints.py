"""The database thread's WAL checkpoint waits for a lull in the loop's writes, within bounds
(streams/pipeline/checkpoints.py).

The loop's clock is a fake one the tests move, and the database thread's work runs inline, so what
runs when is decided by the tests, not by how busy the machine is."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest
from django.conf import settings
from django.db.backends.sqlite3.base import DatabaseWrapper

from streams.pipeline import checkpoints, ends, store
from streams.pipeline.checkpoints import DUE_ROWS, OVERDUE_ROWS, QUIET_S, QuietCheckpoints

SQLITE_ONLY = pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
                                 reason="SQLite only")


class FakeClock:
    """The running loop's time, moved by the test: timers fire when it passes them."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.now = loop.time()
        loop.time = lambda: self.now  # call_later and the loop's own timer check both read it

    async def advance(self, seconds: float) -> None:
        self.now += seconds
        for _ in range(10):  # the timers now due, the tasks they start, those tasks' steps
            await asyncio.sleep(0)


def inline(function):
    """``database_sync_to_async`` without the thread: these tests' database work is fake (and channels'
    closing of old connections around the hop touches connections pytest-django may refuse)."""
    async def run(*args):
        return function(*args)
    return run


@pytest.fixture(autouse=True)
def _inline_thread_hop(monkeypatch):
    monkeypatch.setattr(checkpoints, "database_sync_to_async", inline)


@pytest.fixture
def thread_work(monkeypatch):
    """What would run on the database thread, recorded instead: the take-over and each checkpoint."""
    calls: list[str] = []
    monkeypatch.setattr(checkpoints, "_take_over", lambda: calls.append("take over"))

    def checkpoint():
        calls.append("checkpoint")
        return (0, 10, 10)

    monkeypatch.setattr(checkpoints, "_checkpoint", checkpoint)
    return calls


async def started() -> tuple[QuietCheckpoints, FakeClock]:
    """A QuietCheckpoints as on SQLite, past its first write (the take-over)."""
    quiet = QuietCheckpoints()
    quiet.enabled = True
    clock = FakeClock(asyncio.get_running_loop())
    with checkpoints._Writing(quiet, 0):
        pass
    await clock.advance(0)
    return quiet, clock


def write(quiet: QuietCheckpoints, rows: int) -> None:
    with checkpoints._Writing(quiet, rows):
        pass


async def test_the_first_write_takes_the_thread_over_and_fewer_rows_than_due_checkpoint_nothing(thread_work):
    quiet, clock = await started()
    assert thread_work == ["take over"]
    write(quiet, DUE_ROWS - 1)
    await clock.advance(10.0)
    assert thread_work == ["take over"]
    assert quiet.checkpoints == 0


async def test_a_due_checkpoint_waits_while_writes_come_and_runs_at_the_first_lull(thread_work):
    quiet, clock = await started()
    write(quiet, DUE_ROWS)
    for _ in range(10):  # writes closer together than QUIET_S: a burst
        await clock.advance(QUIET_S / 2)
        write(quiet, 500)
    assert thread_work == ["take over"]
    await clock.advance(QUIET_S / 2)
    assert thread_work == ["take over"]  # quiet for half the lull only
    await clock.advance(QUIET_S / 2)
    assert thread_work == ["take over", "checkpoint"]
    assert quiet.rows == 0 and quiet.due_since is None and quiet.checkpoints == 1


async def test_a_write_in_flight_is_no_lull(thread_work):
    quiet, clock = await started()
    write(quiet, DUE_ROWS)
    quiet.began()  # the next round is being written
    await clock.advance(QUIET_S * 5)
    assert thread_work == ["take over"]
    quiet.ended(10)
    await clock.advance(QUIET_S)
    assert thread_work == ["take over", "checkpoint"]


async def test_writes_that_never_pause_do_not_defer_it_past_the_limit(thread_work, monkeypatch):
    quiet, clock = await started()
    write(quiet, DUE_ROWS)
    steps = int(checkpoints.DEFER_MAX_S / (QUIET_S / 2))
    for _ in range(steps - 2):
        await clock.advance(QUIET_S / 2)
        write(quiet, 1)
    assert thread_work == ["take over"]
    for _ in range(4):
        await clock.advance(QUIET_S / 2)
        write(quiet, 1)
    assert thread_work == ["take over", "checkpoint"]


async def test_a_log_past_the_overdue_size_checkpoints_after_the_write_in_flight(thread_work):
    quiet, clock = await started()
    write(quiet, OVERDUE_ROWS)
    quiet.began()  # still writing: the checkpoint queues behind it on the thread
    await clock.advance(0)
    assert thread_work == ["take over", "checkpoint"]
    quiet.ended(1)


async def test_rows_written_during_a_checkpoint_make_the_next_one_due(thread_work, monkeypatch):
    quiet, clock = await started()
    gate = asyncio.Event()
    loop = asyncio.get_running_loop()

    async def slow(*_args):
        thread_work.append("checkpoint")
        await gate.wait()
        return (0, 1, 1)

    monkeypatch.setattr(checkpoints, "database_sync_to_async", lambda fn: slow)
    write(quiet, DUE_ROWS)
    await clock.advance(QUIET_S)
    assert thread_work == ["take over", "checkpoint"]
    write(quiet, DUE_ROWS)  # during it
    loop.call_soon(gate.set)
    await clock.advance(0)
    await clock.advance(QUIET_S)
    loop.call_soon(gate.set)
    await clock.advance(0)
    assert thread_work == ["take over", "checkpoint", "checkpoint"]


async def test_a_failed_checkpoint_is_logged_and_the_next_due_one_runs(monkeypatch, caplog):
    calls = []
    monkeypatch.setattr(checkpoints, "_take_over", lambda: None)

    def checkpoint():
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("disk I/O error")
        return (0, 3, 3)

    monkeypatch.setattr(checkpoints, "_checkpoint", checkpoint)
    quiet, clock = await started()
    with caplog.at_level(logging.WARNING, logger="streams.pipeline.checkpoints"):
        write(quiet, DUE_ROWS)
        await clock.advance(QUIET_S)
    assert quiet.failures == 1 and quiet.checkpoints == 0
    assert "checkpoint on the database thread failed" in caplog.text
    write(quiet, DUE_ROWS)
    await clock.advance(QUIET_S)
    assert len(calls) == 2 and quiet.checkpoints == 1


async def test_a_failed_take_over_is_tried_again_at_the_next_write(monkeypatch, caplog):
    calls = []

    def take_over():
        calls.append(1)
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(checkpoints, "_take_over", take_over)
    quiet, clock = await started()
    assert not quiet.taken_over and "deferring WAL checkpoints" in caplog.text
    write(quiet, 1)
    await clock.advance(0)
    assert len(calls) == 2 and quiet.taken_over


async def test_no_checkpoint_starts_beside_a_retried_take_over(monkeypatch):
    calls, gate = [], asyncio.Event()
    loop = asyncio.get_running_loop()

    async def take_over():
        calls.append("take over")
        if len(calls) == 1:
            raise sqlite3.OperationalError("database is locked")
        await gate.wait()

    async def checkpoint():
        calls.append("checkpoint")
        return (0, 1, 1)

    monkeypatch.setattr(checkpoints, "database_sync_to_async",
                        lambda fn: take_over if fn is checkpoints._take_over else checkpoint)
    quiet, clock = await started()  # the first take-over failed
    quiet.rows = DUE_ROWS
    quiet.due_since = clock.now
    quiet._arm(loop, clock.now)  # a due checkpoint's timer is pending...
    write(quiet, 1)  # ...when a write retries the take-over, which takes a while
    await clock.advance(QUIET_S * 2)
    assert calls == ["take over", "take over"]
    gate.set()
    await clock.advance(0)
    await clock.advance(QUIET_S * 2)
    assert calls == ["take over", "take over", "checkpoint"]


async def test_on_postgresql_it_does_nothing(thread_work, monkeypatch):
    monkeypatch.setattr(checkpoints, "connection", SimpleNamespace(vendor="postgresql"))
    quiet = QuietCheckpoints()
    clock = FakeClock(asyncio.get_running_loop())
    write(quiet, OVERDUE_ROWS * 2)
    await clock.advance(10.0)
    assert thread_work == []


async def test_the_store_and_the_ends_count_their_rows_to_the_loops_checkpoints(monkeypatch):
    counted = []

    class Counting:
        def began(self):
            pass

        def ended(self, rows):
            counted.append(rows)

    monkeypatch.setattr(checkpoints, "quiet_checkpoints", lambda: Counting())

    async def written(*_args):
        return None

    monkeypatch.setattr(store, "database_sync_to_async", lambda fn: written)
    monkeypatch.setattr(ends, "database_sync_to_async", lambda fn, **_kw: written)
    rows = [(1, seq, 0.0, "t", "{}") for seq in range(7)]
    await store.GroupWriter().send_round([(1, rows, None), (2, rows[:3], {"event_count": 3})])
    text = "x" * 3300
    await ends.EndWriter().send_round([(1, {"output_text": text}), (2, {"status": "failed"})])
    assert counted == [10, (1 + 3 * 3300 // checkpoints.ROW_BYTES) + 1]


# --- on the database thread, against a real SQLite file ---------------------------------------

@pytest.fixture
def file_database(tmp_path, monkeypatch, django_db_blocker):
    """The module's ``connection`` is a connection to a file of its own, opened as the server opens
    SQLite (its init_command and connection_created receivers)."""
    with django_db_blocker.unblock():
        wrapper = DatabaseWrapper({**settings.DATABASES["default"], "NAME": str(tmp_path / "db.sqlite3")},
                                  alias="checkpoints-test")
        monkeypatch.setattr(checkpoints, "connection", wrapper)
        monkeypatch.setattr(checkpoints, "deferring", set())
        yield wrapper
        wrapper.close()


def autocheckpoint(wrapper) -> int:
    return wrapper.connection.execute("PRAGMA wal_autocheckpoint").fetchone()[0]


def connect_django(name, alias):
    wrapper = DatabaseWrapper({**settings.DATABASES["default"], "NAME": str(name)}, alias=alias)
    wrapper.ensure_connection()
    return wrapper


@SQLITE_ONLY
def test_once_taken_over_the_database_checkpoints_only_at_the_bound_on_every_connection(file_database, tmp_path):
    file_database.ensure_connection()
    assert autocheckpoint(file_database) == 250  # ~4 MB of 16 KiB pages, as every connection
    checkpoints._take_over()
    assert autocheckpoint(file_database) == checkpoints.bound_pages(16384) == 4096
    file_database.close()
    file_database.ensure_connection()  # reopened (CONN_MAX_AGE)
    assert autocheckpoint(file_database) == 4096
    other = connect_django(file_database.settings_dict["NAME"], "checkpoints-other")  # a request's thread
    elsewhere = connect_django(tmp_path / "other.sqlite3", "checkpoints-elsewhere")
    try:
        assert autocheckpoint(other) == 4096
        assert autocheckpoint(elsewhere) == 250  # another database keeps the ~4 MB interval
    finally:
        other.close()
        elsewhere.close()


@SQLITE_ONLY
def test_a_small_commit_elsewhere_does_not_copy_the_log_the_lull_waits_for(file_database):
    file_database.ensure_connection()
    checkpoints._take_over()
    raw = file_database.connection
    raw.execute("CREATE TABLE t (x)")
    raw.execute("BEGIN")
    raw.executemany("INSERT INTO t VALUES (?)", [("y" * 300,)] * 20_000)  # ~6 MB of log
    raw.execute("COMMIT")
    path = Path(file_database.settings_dict["NAME"])
    other = connect_django(path, "checkpoints-request")
    try:
        with other.cursor() as cursor:  # a request saving a row, on its own thread's connection
            cursor.execute("INSERT INTO t VALUES ('z')")
    finally:
        other.close()
    assert path.stat().st_size < 1_000_000  # still in the log, left for the lull


@SQLITE_ONLY
def test_the_commit_leaves_the_copy_to_the_checkpoint(file_database):
    file_database.ensure_connection()
    checkpoints._take_over()
    raw = file_database.connection
    raw.execute("CREATE TABLE t (x)")
    raw.execute("BEGIN")
    raw.executemany("INSERT INTO t VALUES (?)", [("y" * 300,)] * 20_000)  # ~6 MB: past ~4 MB, not the bound
    raw.execute("COMMIT")
    path = Path(file_database.settings_dict["NAME"])
    # SQLite's automatic checkpoint (every ~4 MB) would have copied the rows in at that commit.
    assert path.stat().st_size < 1_000_000
    busy, frames, copied = checkpoints._checkpoint()
    assert busy == 0 and frames > 0 and copied == frames
    assert path.stat().st_size > 6_000_000
