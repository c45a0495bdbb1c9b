"""A gateway run's row inserted on the serving thread, without a hop to the database thread.

The run is created while its request is on the way to the provider, and every millisecond until the
provider answers counts towards the client's time to first byte. On the database thread the insert
took the provider's answer ~2.3 ms longer on 2 busy cores (the hop there and back, two thread
wake-ups, the ORM's Python holding the GIL; docs/performance.md). On SQLite (WAL) the same INSERT,
built by Django's own compiler, is a fraction of a millisecond on a kept connection of this thread.

It never waits: the connection's busy timeout is zero, so when the database thread holds the write
lock (a flush) the insert is refused at once and the caller takes the database thread's path.

On PostgreSQL the same statement goes on the event loop's own asyncio connection
(streams/pipeline/loop_db.py, which the token read uses too): the hop to the database thread had put
the run's creation 1.6 ms after the provider's answer, inside the time to first byte. The INSERT is
not idempotent, so a failure after it may have reached the server is told apart
(:class:`MaybeInserted`): the caller then looks for the row before it inserts one. That covers a
timeout (psycopg cancels the statement and waits for it to end) and an answer lost with a
connection the server also lost; a connection cut between the two while the server goes on with
the INSERT (a proxy's reset) could still leave a second row, empty and ``streaming`` (docs/gateway.md,
"Limits").

Once the loop holds run ids reserved ahead (:class:`RunIds`: a block of the sequence's values taken
on the database thread by a commit that waits for the WAL flush, so no id of it can be handed out
again after a PostgreSQL crash), a run gets one of them and its INSERT does not wait for the flush
(``synchronous_commit`` off for that statement's transaction alone): ~0.5 ms at p50 and the flush's
8-10 ms spikes at p99 out of the time to first byte on this VM. With the id known before the INSERT,
an unanswered one is simply sent again (``ON CONFLICT (id) DO NOTHING``): one row in every case. The
row alone can then be lost by a crash of PostgreSQL before the run's first commit that waits for the
flush (its first events'); the recorder makes it again (streams/gateway/recorder.py,
``unflushed_row``), so the run never silently vanishes.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import enum
import functools
import logging
import sqlite3
import threading
import time
import weakref
from pathlib import Path

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import connection as thread_connection
from django.db import connections
from django.db.models.sql import InsertQuery
from django.db.models.sql.compiler import SQLInsertCompiler

from streams.models import Run
from streams.pipeline import loop_db

log = logging.getLogger(__name__)

_writers = threading.local()  # this thread's SQLite connection for inserting runs, and its database


def insert_here(run: Run) -> bool:
    """Insert the unsaved ``run`` now on this thread's own connection; True when done (``run.pk`` set),
    False when it must go the database thread's way (not SQLite, the write lock taken, any error)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return False
    return insert_into(run, str(database["NAME"]))


def insert_into(run: Run, name: str) -> bool:
    """:func:`insert_here` into the SQLite database file ``name``."""
    if name == ":memory:" or "mode=memory" in name:
        return False
    try:
        sql, params = _insert_sql(run)
        connection = _connection(name)
        row = connection.execute(sql, params).fetchone()
    except (sqlite3.Error, ValueError) as exc:
        _writers.connection = None  # opened again next time
        if not (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)):
            log.warning("inserting a gateway run without a thread hop failed, using the database thread: %r", exc)
        return False
    _inserted(run, row[0])
    return True


class MaybeInserted(Exception):
    """The INSERT was sent on the loop's connection and its answer never came: the row may exist.
    ``reserved``: the run's id was set before the INSERT (a reserved one), so sending it again
    (:func:`insert_again`) makes one row whether or not the first reached the server."""

    def __init__(self, reason: str, reserved: bool = False) -> None:
        super().__init__(reason)
        self.reserved = reserved


class Inserted(enum.Enum):
    """What :func:`insert_on_loop` did; false when it did nothing (the database thread's way)."""

    NO = 0
    FLUSHED = 1  # committed with the WAL flush, the id from the sequence's default
    UNFLUSHED = 2  # a reserved id, committed without waiting for the flush: a crash may lose the row

    def __bool__(self) -> bool:
        return self is not Inserted.NO


async def insert_on_loop(run: Run) -> Inserted:
    """PostgreSQL: insert the unsaved ``run`` on the event loop's own connection (``run.pk`` set when
    done); :attr:`Inserted.NO` when not sent (not PostgreSQL, no connection: the database thread's way).
    With a reserved id (:class:`RunIds`) the commit does not wait for the WAL flush.
    Raises :class:`MaybeInserted` when the statement may have reached the server unanswered."""
    if not loop_db.available():
        return Inserted.NO
    reserved = run_ids().take()
    sent = False
    try:
        if reserved is not None:
            run.pk = reserved
            sql, params = _insert_sql(run, "%s", reserved=True)
        else:
            sql, params = _insert_sql(run, "%s")
        async with loop_db.postgres() as connection:
            sent = True
            cursor = await connection.execute(sql, params)
            row = await cursor.fetchone()
    except loop_db.NoDirectPath as exc:
        if sent and exc.connected:
            raise MaybeInserted(str(exc), reserved=reserved is not None) from exc
        if reserved is not None:
            run.pk = None  # the database thread's INSERT takes the sequence's next value instead
        loop_db.note_fallback("inserting a gateway run on the event loop's connection", exc)
        return Inserted.NO
    except ValueError as exc:  # a statement this module cannot build: never sent
        run.pk = None
        log.warning("a gateway run's INSERT could not be built here, using the database thread: %r", exc)
        return Inserted.NO
    if reserved is not None:
        if row is None:
            # No row back: the id was taken already, which a reserved id never is. Whatever holds it
            # is not this run, so not recorded into: the database thread makes the run with a new id.
            log.error("gateway run id %s was reserved but is taken already; using the database thread", reserved)
            run.pk = None
            return Inserted.NO
        _inserted(run, reserved)
        _unflushed.add(run)
        return Inserted.UNFLUSHED
    _inserted(run, row[0])
    return Inserted.FLUSHED


_unflushed: weakref.WeakSet[Run] = weakref.WeakSet()


def unflushed(run: Run) -> bool:
    """Whether ``run``'s row was committed without waiting for the WAL flush (:attr:`Inserted.UNFLUSHED`):
    a crash of PostgreSQL before the run's next flushed commit can lose it."""
    return run in _unflushed


def insert_again(run: Run) -> bool:
    """Database thread: ``run`` (its id reserved) inserted unless its row is there already (an
    unanswered INSERT made it); whether it was missing. Idempotent (``ON CONFLICT (id) DO NOTHING``):
    an INSERT of the same id still in progress on the server is waited for by PostgreSQL, so this
    makes one row in every case (True then means only that none was there when looked for). Also
    makes again a row a crash of PostgreSQL lost (the recorder's ``unflushed_row``); this commit
    waits for the flush.

    The run counts as :func:`unflushed` afterwards whichever way it went: a row found here, or waited
    for, is the unanswered INSERT's, committed without the flush, and a crash can still lose it."""
    missing = not Run.objects.filter(pk=run.pk).exists()
    if missing:
        Run.objects.bulk_create([run], ignore_conflicts=True)
    _inserted(run, run.pk)
    _unflushed.add(run)
    return missing


ID_BLOCK = 32  # run ids reserved at once, per event loop
ID_LOW = 8  # a new block is reserved once this few are left
ID_RETRY_S = 5.0  # after a failed reservation, none tried again for this long


class RunIds:
    """The ids this event loop's gateway runs take, reserved ahead in blocks (PostgreSQL only).

    A block is ``ID_BLOCK`` values of the run table's sequence, taken on the database thread in the
    background once ``ID_LOW`` or fewer are left, never inside a request. Each process (each loop)
    holds its own block, so runs' ids are unique but not in the order the runs began (lists sort by
    start time; the id only breaks ties). Ids of a block a process never used are skipped."""

    def __init__(self) -> None:
        self.ids: collections.deque[int] = collections.deque()
        self.reserving: asyncio.Task[None] | None = None
        self.retry_at = 0.0

    def take(self) -> int | None:
        """A reserved id, or None when none is left (the sequence's default then, with the flush);
        starts the next reservation when the block runs low."""
        if len(self.ids) <= ID_LOW and self.reserving is None and time.monotonic() >= self.retry_at:
            # A context of its own: not the request's that happened to need an id (on Django's view
            # path its database work would run on that request's thread and connection).
            self.reserving = asyncio.get_running_loop().create_task(
                self._reserve(), name="gateway-run-ids", context=contextvars.Context())
        return self.ids.popleft() if self.ids else None

    async def _reserve(self) -> None:
        try:
            self.ids.extend(await database_sync_to_async(reserve_ids)(ID_BLOCK))
        except Exception as exc:  # noqa: BLE001 - runs take the sequence's default meanwhile
            self.retry_at = time.monotonic() + ID_RETRY_S
            loop_db.note_fallback("reserving gateway run ids", exc)
        finally:
            self.reserving = None


_run_ids: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, RunIds] = weakref.WeakKeyDictionary()


def run_ids() -> RunIds:
    """The running loop's reserved ids."""
    loop = asyncio.get_running_loop()
    ids = _run_ids.get(loop)
    if ids is None:
        ids = _run_ids[loop] = RunIds()
    return ids


def reserve_ids(count: int) -> list[int]:
    """Database thread, PostgreSQL: ``count`` new values of the run table's id sequence, committed
    with the WAL flush before they are returned, so none can be handed out again after a crash.

    ``txid_current()`` gives the statement's transaction an id, so its commit writes a record and
    waits for the flush whatever nextval logged: the flush covers every WAL record before it, the
    sequence's advance among them (nextval logs 32 values ahead; one that logged nothing itself
    relies on an earlier record, which this flush covers too)."""
    meta = Run._meta
    with thread_connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)), txid_current() FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, count])
        return [row[0] for row in cursor.fetchall()]


def _inserted(run: Run, pk: int) -> None:
    run.pk = pk
    run._state.adding = False
    run._state.db = "default"


def _connection(name: str) -> sqlite3.Connection:
    connection = getattr(_writers, "connection", None)
    if connection is None or _writers.name != name:
        # Autocommit; no wait for the write lock (timeout 0); the durability the app's own
        # connections use (dashboard/settings.py: WAL, synchronous NORMAL), so a commit is no fsync;
        # and never a WAL checkpoint on this thread (the database thread's commits run them).
        connection = sqlite3.connect(Path(name).absolute().as_uri(), uri=True, timeout=0, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA wal_autocheckpoint=0")
        connection.execute("PRAGMA foreign_keys=ON")
        _writers.connection, _writers.name = connection, name
    return connection


def _insert_sql(run: Run, placeholder: str = "?", reserved: bool = False) -> tuple[str, tuple]:
    """Django's own INSERT ... RETURNING for ``run`` (what ``Run.objects.create`` sends), with the
    driver's placeholders (``?`` sqlite3, ``%s`` psycopg): the statement built once (:func:`_statement`),
    each value prepared as Django's compiler prepares it (a new statement cost ~0.6 ms on this VM, half
    the insert). ``reserved`` (PostgreSQL): ``run.pk`` is a reserved id, sent with the row, and the
    commit does not wait for the WAL flush."""
    compiler, fields, sql = _statement(settings.DATABASES["default"]["ENGINE"], placeholder, reserved)
    return sql, tuple(compiler.prepare_value(field, compiler.pre_save_val(field, run)) for field in fields)


# The row's INSERT with its reserved id, not waiting for the flush: set_config(..., true) holds for
# the statement's own transaction only (autocommit), and RETURNING runs it before that commits. A row
# already there (an INSERT sent again) is left as it is, and nothing comes back.
UNFLUSHED_TAIL = " ON CONFLICT ({id}) DO NOTHING RETURNING set_config('synchronous_commit', 'off', true)"


@functools.cache
def _statement(engine: str, placeholder: str, reserved: bool = False) -> tuple[SQLInsertCompiler, list, str]:
    """Per database engine (tests swap it), placeholder style and id (the sequence's, or reserved)."""
    meta = Run._meta
    fields = [field for field in meta.local_concrete_fields if not field.generated and field is not meta.auto_field]
    if reserved:
        fields = [meta.auto_field, *fields]
    query = InsertQuery(Run)
    query.insert_values(fields, [Run()])
    compiler = query.get_compiler(connection=connections["default"])
    if not reserved:
        compiler.returning_fields = meta.db_returning_fields
    [(sql, _params)] = compiler.as_sql()
    if "%%" in sql or sql.count("%s") != len(fields) or (reserved and "RETURNING" in sql):
        raise ValueError("an INSERT this module cannot pass to the driver as it is")
    if reserved:
        sql += UNFLUSHED_TAIL.format(id=compiler.quote_name_unless_alias(meta.pk.column))
    return compiler, fields, sql.replace("%s", placeholder)
