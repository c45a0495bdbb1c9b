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

Once the loop holds run ids reserved ahead (:class:`RunIds`: a block taken on the database thread by
a commit that waits for the disk, so no id of it can be handed out again after a crash; on
PostgreSQL values of the sequence, on SQLite AUTOINCREMENT's counter moved past the block), a run
takes one before its request goes out and its row is inserted once the client has the answer's head
(which names the id) and first bytes, or 5 ms after the request went out if they have not come by
then (:class:`PendingRow`; streams/gateway/proxy.py, ``ROW_AFTER_SEND_S``): the SQLite INSERT, ~1 ms
of the loop's CPU with the run table's 26 indexes, ran before a fast provider's waiting head was
read. The row's ``created_at`` is the request's arrival (``started_at``), not the INSERT's time. The row goes in
before anything of the run is stored (the recorder waits for it). On PostgreSQL its INSERT does not
wait for the flush (``synchronous_commit`` off for that statement's transaction alone). With the id
known before the INSERT, an unanswered or failed one is simply sent again (``ON CONFLICT (id) DO
NOTHING``): one row in every case. The row alone can then be lost by a crash of PostgreSQL before
the run's first commit that waits for the flush (its first events'); the recorder makes it again
(streams/gateway/recorder.py, ``unflushed_row``), so the run never silently vanishes.
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
from django.db import connections, transaction
from django.db.models.sql import InsertQuery
from django.db.models.sql.compiler import SQLInsertCompiler
from django.utils import timezone

from streams.models import Run
from streams.pipeline import loop_db

log = logging.getLogger(__name__)

_writers = threading.local()  # this thread's SQLite connection for inserting runs, and its database


def insert_here(run: Run, reserved: bool = False, sent_before: bool = False) -> bool:
    """Insert the unsaved ``run`` now on this thread's own connection; True when done (``run.pk`` set),
    False when it must go the database thread's way (not SQLite, the write lock taken, any error:
    nothing was written). ``reserved``: ``run.pk`` is a reserved id, sent with the row; raises
    :class:`IdTaken` when that id's row is there already (``sent_before``: an earlier try may have
    made it, and it is then this run's)."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.sqlite3":
        return False
    return insert_into(run, str(database["NAME"]), reserved, sent_before)


def insert_into(run: Run, name: str, reserved: bool = False, sent_before: bool = False) -> bool:
    """:func:`insert_here` into the SQLite database file ``name``."""
    if name == ":memory:" or "mode=memory" in name:
        return False
    try:
        sql, params = _insert_sql(run, "?", reserved)
        connection = _connection(name)
        row = connection.execute(sql, params).fetchone()
    except (sqlite3.Error, ValueError) as exc:
        _writers.connection = None  # opened again next time
        if not (isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)):
            log.warning("inserting a gateway run without a thread hop failed, using the database thread: %r", exc)
        return False
    if reserved and row is None and not sent_before:
        raise IdTaken(f"run id {run.pk} was reserved but is taken already")
    _inserted(run, run.pk if reserved else row[0])
    return True


class MaybeInserted(Exception):
    """The INSERT was sent on the loop's connection and its answer never came: the row may exist."""


class Inserted(enum.Enum):
    """What :func:`insert_on_loop` did; false when it did nothing (the database thread's way)."""

    NO = 0
    FLUSHED = 1  # committed with the WAL flush, the id from the sequence's default
    UNFLUSHED = 2  # a reserved id, committed without waiting for the flush: a crash may lose the row

    def __bool__(self) -> bool:
        return self is not Inserted.NO


async def insert_on_loop(run: Run) -> Inserted:
    """PostgreSQL: insert the unsaved ``run`` (no id yet) on the event loop's own connection, its id the
    sequence's next value and its commit waiting for the WAL flush (``run.pk`` set when done);
    :attr:`Inserted.NO` when not sent (not PostgreSQL, no connection: the database thread's way).
    A run whose id is reserved goes by :func:`insert_reserved_on_loop` instead.
    Raises :class:`MaybeInserted` when the statement may have reached the server unanswered."""
    answered, row = await _insert_on_loop(run, reserved=False)
    if not answered:
        return Inserted.NO
    _inserted(run, row[0])
    return Inserted.FLUSHED


async def _insert_on_loop(run: Run, reserved: bool) -> tuple[bool, tuple | None]:
    """Send ``run``'s INSERT on the event loop's own connection: ``(True, the row it returned)`` when
    answered, ``(False, None)`` when not sent (the database thread's way). Raises
    :class:`MaybeInserted` when it may have reached the server unanswered."""
    if not loop_db.available():
        return False, None
    sent = False
    try:
        sql, params = _insert_sql(run, "%s", reserved=reserved)
        async with loop_db.postgres() as connection:
            sent = True
            cursor = await connection.execute(sql, params)
            return True, await cursor.fetchone()
    except loop_db.NoDirectPath as exc:
        if sent and exc.connected:
            raise MaybeInserted(str(exc)) from exc
        loop_db.note_fallback("inserting a gateway run on the event loop's connection", exc)
    except ValueError as exc:  # a statement this module cannot build: never sent
        log.warning("a gateway run's INSERT could not be built here, using the database thread: %r", exc)
    return False, None


class IdTaken(Exception):
    """A reserved id's row is there and was not made by this run (no INSERT of it was ever sent): it
    belongs to something else, so nothing is recorded into it. A reserved id is never taken by
    anything else (:class:`RunIds`); this is the guard, should that ever not hold."""


async def insert_reserved_on_loop(run: Run, sent_before: bool = False) -> Inserted:
    """PostgreSQL: insert ``run`` with its reserved id (``run.pk``) on the event loop's own connection,
    its commit not waiting for the WAL flush (that statement's transaction only); :attr:`Inserted.NO`
    when not sent (the caller takes the database thread's way, same id). ``sent_before``: an earlier
    try may have made the row, so a row found is this run's. Raises :class:`MaybeInserted`
    when the statement may have reached the server unanswered, :class:`IdTaken`."""
    answered, row = await _insert_on_loop(run, reserved=True)
    if not answered:
        return Inserted.NO
    if row is None and not sent_before:
        raise IdTaken(f"run id {run.pk} was reserved but is taken already")
    _inserted(run, run.pk)
    _unflushed.add(run)
    return Inserted.UNFLUSHED


_unflushed: weakref.WeakSet[Run] = weakref.WeakSet()


def unflushed(run: Run) -> bool:
    """Whether ``run``'s row was committed without waiting for the WAL flush (:attr:`Inserted.UNFLUSHED`):
    a crash of PostgreSQL before the run's next flushed commit can lose it."""
    return run in _unflushed


def insert_again(run: Run) -> bool:
    """Database thread: ``run`` (its id reserved) inserted unless its row is there already (an
    unanswered INSERT made it, or an earlier try); whether it was missing. Idempotent (``ON CONFLICT (id) DO NOTHING``):
    an INSERT of the same id still in progress on the server is waited for by PostgreSQL, so this
    makes one row in every case (True then means only that none was there when looked for). Also
    makes again a row a crash of PostgreSQL lost (the recorder's ``unflushed_row``); this commit
    waits for the flush.

    On PostgreSQL the run counts as :func:`unflushed` afterwards whichever way it went: a row found
    here, or waited for, is the unanswered INSERT's, committed without the flush, and a crash can still
    lose it."""
    with transaction.atomic():
        missing = not Run.objects.filter(pk=run.pk).exists()
        if missing:
            Run.objects.bulk_create([run], ignore_conflicts=True)  # created_at set to now by Django ...
            if run.started_at is not None:  # ... and back to the request's arrival
                Run.objects.filter(pk=run.pk).update(created_at=run.started_at)
                run.created_at = run.started_at
    _inserted(run, run.pk)
    if _unflushed_inserts():
        _unflushed.add(run)
    return missing


def _unflushed_inserts() -> bool:
    """Whether a reserved id's INSERT commits without waiting for the disk (PostgreSQL's, above)."""
    return settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


ID_BLOCK = 32  # run ids reserved at once, per event loop
ID_LOW = 8  # a new block is reserved once this few are left
ID_RETRY_S = 5.0  # after a failed reservation, none tried again for this long


class RunIds:
    """The ids this event loop's gateway runs take, reserved ahead in blocks (SQLite and PostgreSQL).

    A block is ``ID_BLOCK`` ids nothing else will take (:func:`reserve_ids`), reserved on the database
    thread in the background once ``ID_LOW`` or fewer are left, never inside a request. Each process
    (each loop) holds its own block, so runs' ids are unique but not in the order the runs began
    (lists sort by start time; the id only breaks ties). Ids of a block a process never used are skipped."""

    def __init__(self) -> None:
        self.ids: collections.deque[int] = collections.deque()
        self.reserving: asyncio.Task[None] | None = None
        self.retry_at = 0.0

    def take(self) -> int | None:
        """A reserved id, or None when none is left (the run is then inserted before its answer, its
        id the database's own); starts the next reservation when the block runs low."""
        if len(self.ids) <= ID_LOW and self.reserving is None and time.monotonic() >= self.retry_at:
            # A context of its own: not the request's that happened to need an id (on Django's view
            # path its database work would run on that request's thread and connection).
            self.reserving = asyncio.get_running_loop().create_task(
                self._reserve(), name="gateway-run-ids", context=contextvars.Context())
        return self.ids.popleft() if self.ids else None

    async def _reserve(self) -> None:
        try:
            self.ids.extend(await database_sync_to_async(reserve_ids)(ID_BLOCK))
        except Exception as exc:  # noqa: BLE001 - runs are inserted before their answer meanwhile
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


def take_reserved_id() -> int | None:
    """A run id reserved ahead for this loop, or None: none in hand yet (a loop's first request or
    two, 5 s after a failed reservation) or a database this module does not reserve on."""
    engine = settings.DATABASES["default"]["ENGINE"]
    if engine == "django.db.backends.sqlite3" or (engine == "django.db.backends.postgresql" and loop_db.available()):
        return run_ids().take()
    return None


def reserve_ids(count: int) -> list[int]:
    """Database thread: ``count`` new run ids nothing else will take, committed durably (waiting for
    the disk) before they are returned, so none can be handed out again after a crash."""
    if thread_connection.vendor == "sqlite":
        return _reserve_sqlite(count)
    return _reserve_postgres(count)


def _reserve_postgres(count: int) -> list[int]:
    """``count`` new values of the run table's id sequence, committed with the WAL flush.

    ``txid_current()`` gives the statement's transaction an id, so its commit writes a record and
    waits for the flush whatever nextval logged: the flush covers every WAL record before it, the
    sequence's advance among them (nextval logs 32 values ahead; one that logged nothing itself
    relies on an earlier record, which this flush covers too)."""
    meta = Run._meta
    with thread_connection.cursor() as cursor:
        cursor.execute("SELECT nextval(pg_get_serial_sequence(%s, %s)), txid_current() FROM generate_series(1, %s)",
                       [meta.db_table, meta.pk.column, count])
        return [row[0] for row in cursor.fetchall()]


def _reserve_sqlite(count: int) -> list[int]:
    """``count`` ids past the run table's AUTOINCREMENT counter, which is moved past them.

    SQLite gives an AUTOINCREMENT row max(``sqlite_sequence``'s value, the largest id) + 1, so every
    other writer (the database thread, another process, the CLI) skips the block. One short
    transaction whose first statement writes (so it takes the write lock with its snapshot, no
    upgrade to fail), committed with ``synchronous=FULL``: the WAL is synced to disk before the ids
    are used, so not even a power cut can hand one out again (the app's other commits are NORMAL:
    a process crash loses none of them, a power cut may lose the last few)."""
    meta = Run._meta
    table, column = meta.db_table, meta.pk.column
    with thread_connection.cursor() as cursor:
        cursor.execute("PRAGMA synchronous")
        (level,) = cursor.fetchone()
        cursor.execute("PRAGMA synchronous=FULL")
        try:
            with transaction.atomic():
                cursor.execute("INSERT INTO sqlite_sequence (name, seq) SELECT %s, 0 "
                               "WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = %s)", [table, table])
                cursor.execute(f'UPDATE sqlite_sequence SET seq = max(seq, (SELECT coalesce(max("{column}"), 0) '
                               f'FROM "{table}")) + %s WHERE name = %s RETURNING seq', [count, table])
                (last,) = cursor.fetchone()
        finally:
            cursor.execute(f"PRAGMA synchronous={int(level)}")
    return list(range(last - count + 1, last + 1))


class PendingRow:
    """A gateway run whose id is reserved and whose row is not inserted yet: a fast provider's head
    (``x-streamscope-run``) and first bytes reach the client first, and the row follows them (or a
    slow provider's request by 5 ms), before the recorder's first write (:meth:`ensure`, called by
    the proxy's timer or relay and by the recorder before it stores anything). On the serving
    thread's connection (SQLite) or the loop's (PostgreSQL), else on the database thread, always
    with the reserved id, so a try that fails is simply made again."""

    def __init__(self, run: Run) -> None:
        assert run.pk is not None
        self.run = run
        self.inserted = Inserted.NO
        self.failures = 0
        self.last_error = ""
        self._sent = False  # a try may have reached the database: a row found with the id is this run's
        self._lock = asyncio.Lock()

    async def ensure(self) -> Inserted:
        """The row inserted (once; a later call finds it done). Raises when it could not be (the
        next call tries again) or :class:`IdTaken`."""
        async with self._lock:
            if not self.inserted:
                try:
                    self.inserted = await self._insert()
                except IdTaken:
                    raise
                except Exception as exc:
                    self.failures += 1
                    self.last_error = repr(exc)
                    raise
            return self.inserted

    async def _insert(self) -> Inserted:
        run = self.run
        # Beating now: the row can go in long after the run began (a slow provider, a retried
        # insert), and another process's recovery sweep would take a start-time heartbeat for an
        # orphan's (as GatewayRecorder._make_row_again does).
        run.heartbeat_at = timezone.now()
        if insert_here(run, reserved=True, sent_before=self._sent):
            return Inserted.FLUSHED
        try:
            inserted = await insert_reserved_on_loop(run, self._sent)
        except MaybeInserted:  # PostgreSQL: the INSERT may have made the row unanswered
            self._sent = True
            inserted = Inserted.NO
        if inserted:
            return inserted
        sent_before = self._sent
        try:
            missing = await database_sync_to_async(insert_again)(run)
        except Exception:
            # A failed try leaves nothing on SQLite (a transaction that did not commit); on PostgreSQL
            # its commit may have been lost unanswered, so a row found later may be this try's.
            if _unflushed_inserts():
                self._sent = True
            raise
        if not missing and not sent_before:
            raise IdTaken(f"run id {run.pk} was reserved but is taken already")
        return Inserted.UNFLUSHED if unflushed(run) else Inserted.FLUSHED


def _inserted(run: Run, pk: int) -> None:
    run.pk = pk
    run._state.adding = False
    run._state.db = "default"


def _connection(name: str) -> sqlite3.Connection:
    connection = getattr(_writers, "connection", None)
    if connection is None or _writers.name != name:
        # Autocommit; no wait for the write lock (timeout 0); the durability the app's own
        # connections use (dashboard/settings.py: WAL, synchronous NORMAL), so a commit is no fsync;
        # and never a WAL checkpoint on this thread (the database thread runs them, streams/pipeline/checkpoints.py).
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
    the insert). ``reserved``: ``run.pk`` is a reserved id, sent with the row; a row already there is left
    as it is and nothing comes back; on PostgreSQL the commit does not wait for the WAL flush."""
    compiler, fields, sql = _statement(settings.DATABASES["default"]["ENGINE"], placeholder, reserved)
    if reserved and run.started_at is not None:
        # A reserved id's row goes in after the request went out (up to its whole answer later): its
        # created_at is the request's arrival, as an insert at once would have made it, not now.
        run.created_at = run.started_at
        return sql, tuple(compiler.prepare_value(field, getattr(run, field.attname) if field.attname == "created_at"
                                                 else compiler.pre_save_val(field, run)) for field in fields)
    return sql, tuple(compiler.prepare_value(field, compiler.pre_save_val(field, run)) for field in fields)


# The row's INSERT with its reserved id. PostgreSQL: not waiting for the flush: set_config(..., true)
# holds for the statement's own transaction only (autocommit), and RETURNING runs it before that
# commits. A row already there (an INSERT sent again) is left as it is, and nothing comes back.
UNFLUSHED_TAIL = " ON CONFLICT ({id}) DO NOTHING RETURNING set_config('synchronous_commit', 'off', true)"
RESERVED_TAIL = " ON CONFLICT ({id}) DO NOTHING RETURNING {id}"  # SQLite's (its commits are not flushed at all)


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
        tail = RESERVED_TAIL if engine == "django.db.backends.sqlite3" else UNFLUSHED_TAIL
        sql += tail.format(id=compiler.quote_name_unless_alias(meta.pk.column))
    return compiler, fields, sql.replace("%s", placeholder)
