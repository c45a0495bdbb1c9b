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
"""

from __future__ import annotations

import functools
import logging
import sqlite3
import threading
from pathlib import Path

from django.conf import settings
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
    """The INSERT was sent on the loop's connection and its answer never came: the row may exist."""


async def insert_on_loop(run: Run) -> bool:
    """PostgreSQL: insert the unsaved ``run`` on the event loop's own connection; True when done
    (``run.pk`` set), False when not sent (not PostgreSQL, no connection: the database thread's way).
    Raises :class:`MaybeInserted` when the statement may have reached the server unanswered."""
    if not loop_db.available():
        return False
    sent = False
    try:
        sql, params = _insert_sql(run, "%s")
        async with loop_db.postgres() as connection:
            sent = True
            cursor = await connection.execute(sql, params)
            row = await cursor.fetchone()
    except loop_db.NoDirectPath as exc:
        if sent and exc.connected:
            raise MaybeInserted(str(exc)) from exc
        loop_db.note_fallback("inserting a gateway run on the event loop's connection", exc)
        return False
    except ValueError as exc:  # a statement this module cannot build: never sent
        log.warning("a gateway run's INSERT could not be built here, using the database thread: %r", exc)
        return False
    _inserted(run, row[0])
    return True


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


def _insert_sql(run: Run, placeholder: str = "?") -> tuple[str, tuple]:
    """Django's own INSERT ... RETURNING for ``run`` (what ``Run.objects.create`` sends), with the
    driver's placeholders (``?`` sqlite3, ``%s`` psycopg): the statement built once (:func:`_statement`),
    each value prepared as Django's compiler prepares it (a new statement cost ~0.6 ms on this VM, half
    the insert)."""
    compiler, fields, sql = _statement(settings.DATABASES["default"]["ENGINE"], placeholder)
    return sql, tuple(compiler.prepare_value(field, compiler.pre_save_val(field, run)) for field in fields)


@functools.cache
def _statement(engine: str, placeholder: str) -> tuple[SQLInsertCompiler, list, str]:
    """Per database engine (tests swap it) and placeholder style."""
    meta = Run._meta
    fields = [field for field in meta.local_concrete_fields if not field.generated and field is not meta.auto_field]
    query = InsertQuery(Run)
    query.insert_values(fields, [Run()])
    compiler = query.get_compiler(connection=connections["default"])
    compiler.returning_fields = meta.db_returning_fields
    [(sql, _params)] = compiler.as_sql()
    if "%%" in sql or sql.count("%s") != len(fields):
        raise ValueError("an INSERT this module cannot pass to the driver as it is")
    return compiler, fields, sql.replace("%s", placeholder)
