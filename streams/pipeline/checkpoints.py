"""SQLite's WAL checkpoints at a lull in the database thread's writes, not inside a burst of them.

Every page SQLite stores reaches the file twice: its frame in the write-ahead log, then the
checkpoint's copy into the database. SQLite's automatic checkpoint runs inside the commit that
takes the log past ``wal_autocheckpoint``: with a fast stream that is the database thread copying
~4 MB every ~12,000 events while the stream is being stored, ~0.3-0.5 us of its CPU per event on a
machine whose two cores the reader, the writer and the upstream all want (docs/performance.md,
eleventh session). The copy has to happen, but not then.

So in a process whose event loop stores events (the flush rounds, store.GroupWriter, and the runs'
ends, ends.EndWriter), the database thread's own connection checkpoints when the loop sees a lull:

- a checkpoint is *due* once :data:`DUE_ROWS` rows (~4 MB of log, the interval SQLite's automatic
  checkpoint had) were written since the last one;
- a due checkpoint runs once no write has been in flight for :data:`QUIET_S`;
- writes that never pause do not defer it past :data:`DEFER_MAX_S` or :data:`OVERDUE_ROWS` rows: then
  it starts as the next write ends, queued on the thread behind whatever the loop sent there since;
- SQLite's own automatic checkpoint stays as the bound: once the loop's database thread took over,
  every connection of this process to that database gets ``wal_autocheckpoint`` =
  :data:`WAL_BOUND_BYTES` of log (:func:`set_checkpoint_interval`, a ``connection_created`` receiver,
  and the take-over for the thread's open connection), so no request's small commit copies a log the
  lull is waiting for; any other database, and a process without such a loop (management commands),
  keeps :data:`WAL_CHECKPOINT_BYTES`, ~4 MB, whatever its page size.

The checkpoint runs on the database thread, the one that writes, as ``PRAGMA wal_checkpoint(PASSIVE)``:
it cannot lose a race with the writer (the ninth session's checkpoint thread did, and the log grew;
docs/decisions.md), and readers are never blocked (PASSIVE copies what no reader still needs; the rest
goes with the next one, as with SQLite's own). A checkpoint that fails is logged, and the next due one
tries again; the bound holds the log meanwhile (SQLite checkpoints after the commit that crosses it,
so the log can pass it by one transaction; a reader holding an old snapshot keeps it from being
reused, as before).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection

from streams.pipeline.per_loop import PerLoop

log = logging.getLogger(__name__)

# A stored event is ~330 bytes of log with its index entry (a 50,008-event stream wrote 16.7 MB of
# pages). Rows are counted, not their bytes: they are counted on the event loop, where summing their
# sizes would cost the reader's thread; a stream of huge events reaches the bound sooner.
ROW_BYTES = 330
DUE_ROWS = 4_096_000 // ROW_BYTES  # ~4 MB of log, SQLite's own interval elsewhere (WAL_CHECKPOINT_BYTES)
QUIET_S = 0.010  # a lull: the flush clock's rounds leave ~15-20 ms between writes; a burst's flushes ~1-5 ms
DEFER_MAX_S = 0.5  # a due checkpoint waits at most this long for a lull...
OVERDUE_ROWS = 8 * DUE_ROWS  # ...or until ~32 MB of log: then it starts as the next write ends
WAL_BOUND_BYTES = 64 * 1024 * 1024  # SQLite's own automatic checkpoint once the loop took over: the bound
WAL_CHECKPOINT_BYTES = 1000 * 4096  # SQLite's default interval with its default page size: everywhere else
_SLACK = 0.001  # a timer may fire a little early (the loop's clock resolution, float sums)
# The SQLite databases (their settings' NAME) whose checkpoints a loop of this process runs at lulls.
deferring: set[str] = set()


def checkpoint_pages(page_size: int) -> int:
    """``wal_autocheckpoint`` (in pages) for ~4 MB of log in a database of ``page_size`` pages."""
    return max(1, WAL_CHECKPOINT_BYTES // page_size)


def bound_pages(page_size: int) -> int:
    """``wal_autocheckpoint`` (in pages) once a loop checkpoints at lulls: the bound."""
    return max(1, WAL_BOUND_BYTES // page_size)


def set_checkpoint_interval(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created`` (dashboard/apps.py): an SQLite connection checkpoints every ~4 MB of
    log whatever its page size, or only at the bound when this process checkpoints it at lulls."""
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    deferred = connection.settings_dict["NAME"] in deferring
    raw.execute(f"PRAGMA wal_autocheckpoint={bound_pages(page_size) if deferred else checkpoint_pages(page_size)}")


def _take_over() -> None:
    """On the database thread: its database is checkpointed at lulls from now on; SQLite's automatic
    checkpoint only at the bound, on this connection now and on every one opened from now on."""
    deferring.add(connection.settings_dict["NAME"])
    connection.ensure_connection()
    set_checkpoint_interval(None, connection)  # the receiver's own choice, for the open connection


def _checkpoint() -> tuple[int, int, int]:
    """On the database thread: ``(busy, frames in the log, frames copied)`` of a PASSIVE checkpoint."""
    connection.ensure_connection()
    return tuple(connection.connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone())


class QuietCheckpoints:
    """One event loop's view of its database thread's writes, and the checkpoints it runs at lulls."""

    def __init__(self) -> None:
        self.enabled = connection.vendor == "sqlite"
        self.rows = 0  # written since the last checkpoint began
        self.in_flight = 0
        self.last_write = 0.0  # loop time the last write ended
        self.due_since: float | None = None
        self.taken_over = False  # the thread's take-over is done or under way
        self.checkpoints = 0  # run so far (tests and the benchmarks read these)
        self.checkpoint_s = 0.0
        self.failures = 0
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task | None = None

    # --- the writers tell it --------------------------------------------------------------

    def began(self) -> None:
        self.in_flight += 1

    def ended(self, rows: int) -> None:
        """A write ended (committed or failed) with ``rows`` rows' worth of log."""
        self.in_flight -= 1
        if not self.enabled:
            return
        loop = asyncio.get_running_loop()
        now = self.last_write = loop.time()
        self.rows += rows
        if not self.taken_over:  # the first write: the thread's connection defers its checkpoints
            self.taken_over = True
            self._start(loop, self._take_over())
            return
        if self.due_since is None and self.rows >= DUE_ROWS:
            self.due_since = now
        if self.due_since is not None:
            self._arm(loop, now)

    # --- when it runs ---------------------------------------------------------------------

    def _overdue(self, now: float) -> bool:
        return self.due_since is not None and (now - self.due_since >= DEFER_MAX_S or self.rows >= OVERDUE_ROWS)

    def _arm(self, loop: asyncio.AbstractEventLoop, now: float) -> None:
        if self._task is not None and not self._task.done():
            return  # one is running: its end looks again
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_later(0.0 if self._overdue(now) else QUIET_S, self._check)

    def _check(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            return  # a take-over retried meanwhile: its end looks again
        loop = asyncio.get_running_loop()
        now = loop.time()
        if not self._overdue(now):
            if self.in_flight:
                return  # a write began: its end arms again
            quiet_for = now - self.last_write
            if quiet_for < QUIET_S - _SLACK:  # a write ended since this timer was set
                self._timer = loop.call_later(QUIET_S - quiet_for, self._check)
                return
        self.rows, self.due_since = 0, None
        self._start(loop, self._checkpoint())

    def _start(self, loop: asyncio.AbstractEventLoop, work: Any) -> None:
        # A context of its own, as the rounds' drain task has (streams/pipeline/rounds.py).
        self._task = loop.create_task(work, name="streamscope-wal-checkpoint", context=contextvars.Context())

    def _after(self) -> None:
        """A task of ours ended: if rows came meanwhile and made a checkpoint due, arm it."""
        self._task = None
        if self.due_since is None and self.rows >= DUE_ROWS:
            self.due_since = self.last_write
        if self.due_since is not None:
            loop = asyncio.get_running_loop()
            self._arm(loop, loop.time())

    # A task cancelled (its loop closing) skips _after: nothing is armed again on a loop that is going.
    async def _take_over(self) -> None:
        try:
            await database_sync_to_async(_take_over)()
        except asyncio.CancelledError:
            self.taken_over = False
            raise
        except Exception:
            self.taken_over = False  # the next write tries again; SQLite's ~4 MB interval meanwhile
            log.warning("deferring WAL checkpoints on the database thread failed", exc_info=True)
        self._after()

    async def _checkpoint(self) -> None:
        started = time.perf_counter()
        try:
            busy, frames, copied = await database_sync_to_async(_checkpoint)()
        except Exception:
            self.failures += 1
            log.warning("a WAL checkpoint on the database thread failed; the next due one tries again",
                        exc_info=True)
        else:
            self.checkpoints += 1
            if busy or (frames >= 0 and copied < frames):
                log.debug("WAL checkpoint: %d of %d frames copied (a reader holds the rest)", copied, frames)
        finally:
            self.checkpoint_s += time.perf_counter() - started
        self._after()

    async def settled(self) -> None:
        """Wait until no checkpoint is due or running (benchmarks, tests: outside what they time)."""
        while self.due_since is not None or (self._task is not None and not self._task.done()):
            if self._task is not None and not self._task.done():
                await asyncio.shield(self._task)
            else:
                await asyncio.sleep(QUIET_S)


_checkpoints = PerLoop(QuietCheckpoints)


def quiet_checkpoints() -> QuietCheckpoints:
    """The running loop's."""
    return _checkpoints.get()


def wrote(rows: int) -> Any:
    """A context for one write of the loop's database thread: ``with wrote(n): await write()``."""
    return _Writing(quiet_checkpoints(), rows)


class _Writing:
    __slots__ = ("checkpoints", "rows")

    def __init__(self, checkpoints: QuietCheckpoints, rows: int) -> None:
        self.checkpoints, self.rows = checkpoints, rows

    def __enter__(self) -> None:
        self.checkpoints.began()

    def __exit__(self, *exc: object) -> None:
        self.checkpoints.ended(self.rows)
