"""The event loop's own PostgreSQL connection, for the few statements that cannot wait for a thread.

Django's database work runs on a thread (``database_sync_to_async``): a hop there and back, two
thread wake-ups and the ORM's Python, 1-10 ms on a busy 2-core machine. The gateway's token read and
its run's INSERT sit inside a client's time to first byte, so on PostgreSQL they go on an autocommit
asyncio connection (psycopg) kept per event loop instead. It is an optimisation only: callers catch
:class:`NoDirectPath` and take the database thread's way.

Its commits wait for the WAL flush like every other connection's. Not waiting for the whole
connection (``synchronous_commit = off``; the flush is ~0.5 ms at p50 and 8-10 ms at p99 on this VM)
was not taken: a run's id is used outside the database at once (a response header, the recorder's
writes by id), and after a crash of PostgreSQL inside the unflushed window the sequence could hand
the same id to another user's run. A gateway run whose id was reserved ahead with a flushed commit
skips the flush for its INSERT's own transaction only (streams/gateway/run_row.py).

Bounded: connecting and the statement together get :data:`DIRECT_TIMEOUT_S`, so a half-open
connection cannot hold the requests behind it; after a failed connect every caller takes the thread
path for :data:`CONNECT_RETRY_S` rather than each waiting for a connect of its own. A connection that
failed is closed and opened again on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from django.conf import settings

try:
    import psycopg
except ImportError:  # PostgreSQL support is optional (pyproject: streamscope[postgres])
    psycopg = None

log = logging.getLogger(__name__)

DJANGO_ONLY_OPTIONS = ("pool", "isolation_level", "server_side_binding", "assume_role")
DIRECT_TIMEOUT_S = 1.0  # connect + statement on the kept connection; beyond it, the database thread's path
CONNECT_RETRY_S = 5.0  # after a failed connect, the thread path only, for this long

# Per event loop: (the database settings it was opened for, an autocommit asyncio connection).
_kept: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[tuple, Any]] = weakref.WeakKeyDictionary()
_connecting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = weakref.WeakKeyDictionary()
_connect_failed_until: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, float] = weakref.WeakKeyDictionary()


class NoDirectPath(Exception):
    """The statement did not run on the loop's connection: use the database thread.

    ``connected`` is true when the failure came after the connection was had, so a statement may
    have reached the server (what a caller whose statement is not idempotent must know)."""

    def __init__(self, reason: str, connected: bool = False) -> None:
        super().__init__(reason)
        self.connected = connected


_fallbacks_noted: set[tuple[str, str]] = set()


def note_fallback(what: str, exc: BaseException) -> None:
    """Log once per kind of failure that ``what`` (a statement kept off the database thread) took the
    database thread's way instead: while the direct path is down, every request would say so. The
    kind of a :class:`NoDirectPath` is that of what caused it."""
    if isinstance(exc, NoDirectPath):
        kind = type(exc.__cause__).__name__ if exc.__cause__ is not None else str(exc)
    else:
        kind = type(exc).__name__
    if (what, kind) not in _fallbacks_noted:
        _fallbacks_noted.add((what, kind))
        log.warning("%s falls back to the database thread (logged once per kind; %s): %s", what, kind, exc)


def available() -> bool:
    """Whether the default database is PostgreSQL with psycopg installed (the only case served)."""
    return psycopg is not None and settings.DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql"


@contextlib.asynccontextmanager
async def postgres() -> AsyncIterator[Any]:
    """The running loop's kept autocommit connection, for one short use within :data:`DIRECT_TIMEOUT_S`.

    Raises :class:`NoDirectPath` when the database is not PostgreSQL, a connect failed moments ago,
    or connecting or the caller's statement failed or took too long (the connection is then closed
    unless only the statement failed). The bound is asyncio's: when it cancels a statement psycopg
    sends the server a cancel and waits for the statement to end, which on an unreachable server
    can hold that one caller up to ~10 s more (psycopg's own timeouts); other callers are not held."""
    if not available():
        raise NoDirectPath("not PostgreSQL")
    database = settings.DATABASES["default"]
    loop = asyncio.get_running_loop()
    if time.monotonic() < _connect_failed_until.get(loop, 0.0):
        raise NoDirectPath("a connect failed moments ago")
    key = (database["NAME"], database["USER"], database["HOST"], database["PORT"])
    connection = None
    try:
        async with asyncio.timeout(DIRECT_TIMEOUT_S):
            connection = await _connection(loop, key, database)
            yield connection
    except (psycopg.Error, OSError, TimeoutError) as exc:
        kept = _kept.get(loop)
        # Closed only when the connection itself failed (not for an error in a statement, which
        # leaves it usable): other coroutines of this loop may have a statement running on it.
        statement_only = isinstance(exc, psycopg.DatabaseError) and not isinstance(exc, psycopg.OperationalError)
        failed = connection is None or connection.broken or not statement_only
        if failed and kept is not None and (connection is None or kept[1] is connection):
            del _kept[loop]
            with contextlib.suppress(Exception):
                await kept[1].close()
        if connection is None:
            _connect_failed_until[loop] = time.monotonic() + CONNECT_RETRY_S
        raise NoDirectPath(f"{type(exc).__name__}: {exc}", connected=connection is not None) from exc


async def _connection(loop: asyncio.AbstractEventLoop, key: tuple, database: dict[str, Any]) -> Any:
    lock = _connecting.setdefault(loop, asyncio.Lock())
    async with lock:  # concurrent first callers open one connection, not one each
        kept = _kept.get(loop)
        if kept is not None and kept[0] == key and not kept[1].closed:
            return kept[1]
        options = {k: v for k, v in database.get("OPTIONS", {}).items() if k not in DJANGO_ONLY_OPTIONS}
        options = {"connect_timeout": 5, **options}  # the deployment's own connect_timeout wins
        connection = await psycopg.AsyncConnection.connect(
            dbname=database["NAME"], user=database["USER"] or None, password=database["PASSWORD"] or None,
            host=database["HOST"] or None, port=database["PORT"] or None, autocommit=True, **options)
        _kept[loop] = (key, connection)
        return connection
