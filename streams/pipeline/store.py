"""Database writes and reads on the hot path, in batches, without per-event ORM objects."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from itertools import chain
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from streams.models import Event, Run
from streams.pipeline import checkpoints
from streams.pipeline.per_loop import PerLoop
from streams.pipeline.rounds import Rounds
from streams.protocol.metrics import FIRST_FIGURES
from streams.protocol.records import encode_record
from streams.protocol.values import usable_response_id

_INSERT = None
Row = tuple[int, int, float, str, str]  # (run_id, seq, t, type, data)
Batch = tuple[int, Sequence[Row], dict[str, Any] | None]  # (run_id, rows, run fields)


def _insert_sql() -> str:
    global _INSERT
    if _INSERT is None:
        table = connection.ops.quote_name(Event._meta.db_table)
        _INSERT = f"INSERT INTO {table} (run_id, seq, t, type, data) VALUES (%s, %s, %s, %s, %s)"
    return _INSERT


def _copy_sql() -> str:
    table = connection.ops.quote_name(Event._meta.db_table)
    return f"COPY {table} (run_id, seq, t, type, data) FROM STDIN"


# SQLite as one multi-row INSERT per batch (chunked under SQLite's bound-parameter limit).
# executemany steps once per row and Python's sqlite3 lets go of the GIL around every step; with
# the event loop busy in the other thread, taking it back costs up to the interpreter's switch
# interval each time: a thousandfold slowdown (docs/performance.md). One step per statement gives
# the GIL back once. Bound parameters, unlike the JSON array (json_each) this replaced, need no
# encoding in Python and no JSON parsing in SQLite (half the CPU per row) and keep a NUL character
# whole. UPDATE ... FROM needs SQLite 3.33.
SQLITE_ONE_STATEMENT = sqlite3.sqlite_version_info >= (3, 33)
# 1,000 rows of 5 values: 5,000 parameters, well under SQLite's limit of 32,766 (since 3.32).
SQLITE_ROWS_PER_STATEMENT = 1000
# A batch's rows go out in statements of a few fixed sizes, so the same few SQL texts come back
# round after round and stay prepared: a connection keeps 16 prepared statements (settings'
# cached_statements) and a text per batch size missed that cache nearly every time, preparing
# cost ~2-3 us per row, more than inserting it (docs/performance.md). Greedy, largest first; the
# last rows (fewer than the smallest size) fill a statement of the smallest size whose unused
# rows are NULLs the statement leaves out.
SQLITE_CHUNK_ROWS = (1000, 250, 64, 16)


def _one_statement() -> bool:
    return connection.vendor == "sqlite" and SQLITE_ONE_STATEMENT


def _execute_unlogged(cursor: Any, sql: str, params: Sequence[Any]) -> None:
    """Execute an SQLite statement written with ``?`` placeholders past Django's debug cursor (with
    DEBUG on it renders each statement with its parameters quoted, by a query of its own, and
    keeps the last 9,000; these parameters are whole batches of events, megabytes each) and past
    its cursor's conversion of ``%s`` to ``?`` (a regular expression over a statement of up to
    5,000 placeholders, every batch)."""
    with connection.wrap_database_errors:
        sqlite3.Cursor.execute(cursor.cursor, sql, params)


def _values_rows(width: int, count: int) -> str:
    """``(?, ?), (?, ?)...``: ``count`` rows of ``width`` SQLite placeholders."""
    row = "(" + ", ".join(["?"] * width) + ")"
    return ", ".join([row] * count)


def chunk_sizes(count: int) -> list[tuple[int, int]]:
    """``(rows, statement size)`` for each statement writing ``count`` rows: whole statements of the
    sizes in :data:`SQLITE_CHUNK_ROWS` (none above SQLITE_ROWS_PER_STATEMENT), largest first, and
    the rest in one statement of the smallest size, padded."""
    sizes = [size for size in SQLITE_CHUNK_ROWS if size <= SQLITE_ROWS_PER_STATEMENT] or [SQLITE_ROWS_PER_STATEMENT]
    chunks = []
    for size in sizes:
        while count >= size:
            chunks.append((size, size))
            count -= size
    if count:
        chunks.append((count, sizes[-1]))
    return chunks


_SQL: dict[tuple, str] = {}  # (kind, [columns...,] rows) -> statement text; a handful of entries


def _insert_statement(rows: int, padded: bool) -> str:
    key = ("insert-padded" if padded else "insert", rows)
    sql = _SQL.get(key)
    if sql is None:
        table = connection.ops.quote_name(Event._meta.db_table)
        if padded:  # a padding row is all NULLs: run_id is never NULL in a real one
            sql = (f"INSERT INTO {table} (run_id, seq, t, type, data)"
                   f" SELECT * FROM (VALUES {_values_rows(5, rows)}) WHERE column1 IS NOT NULL")
        else:
            sql = f"INSERT INTO {table} (run_id, seq, t, type, data) VALUES {_values_rows(5, rows)}"
        _SQL[key] = sql
    return sql


def _fixed_chunks(rows: Sequence[Sequence[Any]], width: int) -> Iterator[tuple[int, bool, list[Any]]]:
    """``rows`` (``width`` values each) as the parameters of statements of :func:`chunk_sizes`' fixed
    sizes: ``(size, padded, params)``, a padded statement's unused rows all NULLs."""
    start = 0
    for count, size in chunk_sizes(len(rows)):
        # Flattened in C: this runs with the GIL held, on the thread next to the event loop's.
        params = list(chain.from_iterable(rows[start:start + count]))
        start += count
        if count < size:
            params.extend([None] * (width * (size - count)))
        yield size, count < size, params


def _sqlite_insert(cursor: Any, rows: Sequence[Row]) -> None:
    for size, padded, params in _fixed_chunks(rows, 5):
        _execute_unlogged(cursor, _insert_statement(size, padded), params)


def _insert_rows(rows: Sequence[Row]) -> None:
    """PostgreSQL gets the rows through COPY: one round trip whatever the batch size (about 10x
    faster than executemany for 500 rows, see docs/scaling.md); SQLite one multi-row INSERT."""
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(_copy_sql()) as copy:
                for row in rows:
                    copy.write_row(row)
        elif _one_statement():
            _sqlite_insert(cursor, rows)
        else:
            cursor.executemany(_insert_sql(), rows)


def append_events(run_id: int, rows: Sequence[Row], run_fields: dict[str, Any] | None = None) -> None:
    """Insert a batch of ``(run_id, seq, t, type, data)`` rows and update the run, atomically."""
    with transaction.atomic():
        _insert_rows(rows)
        if run_fields:
            Run.objects.filter(pk=run_id).update(**run_fields)


# Fields a flush writes on every batch; updated with raw executemany instead of one ORM query
# per run (with hundreds of runs per round, ORM compiling dominated the thread that writes every batch).
FLUSH_FIELDS = frozenset({"event_count", "heartbeat_at", "last_upstream_seq", "response_id", "output_text",
                          *(column for column, _ in FIRST_FIGURES)})


def append_many(batches: Sequence[Batch]) -> None:
    """Several runs' batches in one transaction: one insert for all rows, then the runs' updates."""
    with transaction.atomic():
        _insert_rows([row for _, rows, _ in batches for row in rows])
        update_runs([(run_id, fields) for run_id, _, fields in batches if fields])


def update_runs(updates: Sequence[tuple[int, dict[str, Any]]], any_fields: bool = False,
                rows_per_statement: int | None = None) -> None:
    """Update runs' rows, grouped by columns into UPDATE ... FROM (VALUES ...) statements (of at most
    ``rows_per_statement`` runs). A flush's fields (FLUSH_FIELDS) go as they are; with ``any_fields``
    (the ends of runs, streams/pipeline/ends.py) every field is prepared by its model field, else a
    run with other fields is updated by the ORM."""
    # One update per run, its fields merged in order (a later value replaces an earlier one), as one
    # UPDATE after another would leave them: one statement's VALUES must not name a run twice (an
    # UPDATE ... FROM would apply either row), and grouped by columns, a run's later fields could
    # otherwise be written before its earlier ones.
    merged: dict[int, dict[str, Any]] = {}
    for run_id, fields in updates:
        merged.setdefault(run_id, {}).update(fields)
    by_columns: dict[tuple[str, ...], dict[int, list[Any]]] = {}
    for run_id, fields in merged.items():
        columns = tuple(sorted(fields))
        if any_fields:
            by_columns.setdefault(columns, {})[run_id] = [
                Run._meta.get_field(c).get_db_prep_save(fields[c], connection) for c in columns] + [run_id]
        elif fields.keys() <= FLUSH_FIELDS:
            by_columns.setdefault(columns, {})[run_id] = [_db_value(c, fields[c]) for c in columns] + [run_id]
        else:  # anything unusual: the ORM handles every field type
            Run.objects.filter(pk=run_id).update(**fields)
    if not by_columns:
        return
    table = connection.ops.quote_name(Run._meta.db_table)
    with connection.cursor() as cursor:
        for columns, by_run in by_columns.items():
            every = list(by_run.values())
            step = rows_per_statement or len(every)
            for start in range(0, len(every), step):
                _update_rows(cursor, table, columns, every[start:start + step])


def _update_rows(cursor: Any, table: str, columns: tuple[str, ...], params: list[list[Any]]) -> None:
    if _one_statement():
        # One statement for every run (see _insert_rows), of the insert's fixed sizes, for
        # the same reason; a padding row's id is NULL, which matches no run.
        for size, _padded, flat in _fixed_chunks(params, len(columns) + 1):
            _execute_unlogged(cursor, _update_statement("sqlite", table, columns, size), flat)
    elif connection.vendor == "postgresql":
        # The same, instead of one UPDATE per run: executemany's row at a time cost ~112 us of
        # the server's CPU per run, one statement for 200 runs ~13 us per run (docs/performance.md,
        # fifth session). Past Django's debug cursor, as on SQLite (_execute_unlogged): with
        # DEBUG on it would keep each statement with every run's whole output text in it.
        for size, _padded, flat in _fixed_chunks(params, len(columns) + 1):
            with connection.wrap_database_errors:
                cursor.cursor.execute(_update_statement("postgresql", table, columns, size), flat)
    else:
        quote = connection.ops.quote_name
        assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
        cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {quote('id')} = %s", params)


def _update_statement(vendor: str, table: str, columns: tuple[str, ...], rows: int) -> str:
    """``UPDATE ... FROM (VALUES ...)`` of ``rows`` runs' ``columns``, each row's id its last value.
    SQLite names a VALUES table's columns column1, column2...; on PostgreSQL each value is cast to its
    column's type, as a VALUES list's columns otherwise take the type of whatever the driver sent
    (text for a CharField: its own varchar(n) would cut a longer value the UPDATE should refuse)."""
    key = (f"{vendor}-update", *columns, rows)
    sql = _SQL.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        if vendor == "sqlite":
            names = [f"column{i + 1}" for i in range(len(columns) + 1)]
            values, alias = _values_rows(len(names), rows), "v"
        else:
            fields = [Run._meta.get_field(column) for column in columns] + [Run._meta.pk]
            casts = ["text" if field.get_internal_type() == "CharField" else field.db_type(connection)
                     for field in fields]
            names = [f"c{i}" for i in range(len(fields))]
            values = ", ".join(["(" + ", ".join(f"%s::{cast}" for cast in casts) + ")"] * rows)
            alias = f"v({', '.join(names)})"
        assignments = ", ".join(f"{quote(column)} = v.{name}" for column, name in zip(columns, names))
        sql = (f"UPDATE {table} SET {assignments} FROM (VALUES {values}) AS {alias}"
               f" WHERE {table}.{quote('id')} = v.{names[-1]}")
        _SQL[key] = sql
    return sql


def _db_value(column: str, value: Any) -> Any:
    if column == "heartbeat_at" and value is not None:
        return connection.ops.adapt_datetimefield_value(value)
    return value


class GroupWriter(Rounds[Batch]):
    """Group commit for every run executing on one event loop.

    Each run flushes every few milliseconds; with hundreds of runs in a process, one transaction
    per flush saturates the single thread Channels runs database work on (docs/performance.md).
    So a batch waits while a write is in flight, and the next write takes every batch that arrived
    meanwhile: one transaction per round, no delay when the process is idle.
    """

    task_name = "streamscope-group-writer"

    async def write(self, run_id: int, rows: Sequence[Row], run_fields: dict[str, Any] | None) -> None:
        await self.submit((run_id, rows, run_fields))

    async def send_round(self, items: list[Batch]) -> list[BaseException | None]:
        # The database thread's WAL checkpoint waits for a lull in these writes (checkpoints.py).
        with checkpoints.wrote(sum(len(rows) for _, rows, _ in items)):
            try:
                await database_sync_to_async(append_many)(items)
                return [None] * len(items)
            except Exception:
                pass
            return await each_on_its_own(items, lambda item: database_sync_to_async(append_events)(*item))


async def each_on_its_own(items: Sequence[Any], write: Any) -> list[BaseException | None]:
    """After a write of them all failed: one bad item must not fail its neighbours, so ``write``
    (a coroutine function) each alone; what each raised (None: written), in order."""
    results: list[BaseException | None] = []
    for item in items:
        try:
            await write(item)
        except Exception as exc:
            results.append(exc)
        else:
            results.append(None)
    return results


_writers = PerLoop(GroupWriter)


def _writer() -> GroupWriter:
    return _writers.get()


async def write_batch(run_id: int, rows: Sequence[Row], run_fields: dict[str, Any] | None = None) -> None:
    """Store a run's batch (and run fields), committed when this returns; grouped with other runs'."""
    await _writer().write(run_id, rows, run_fields)


async def write_round(batches: list[Batch]) -> list[BaseException | None]:
    """Store several runs' batches in one transaction now (the flush clock's round); one result per
    batch: None, or the error it failed with (a bad batch fails alone, see GroupWriter)."""
    return await _writer().send_round(batches)


def update_run(run_id: int, **fields: Any) -> None:
    Run.objects.filter(pk=run_id).update(**fields)


def encoded_events_after(run_id: int, after: int, limit: int, upto: int | None = None) -> list[tuple[int, str]]:
    """``(seq, encoded record)`` for events with seq > after (and <= upto), in order."""
    # Written out: the ORM's building and compiling of this query cost ~200 us of CPU, the
    # statement ~15; every viewer's opening reads a page (dashboard/consumers.py).
    quote = connection.ops.quote_name
    sql = (f"SELECT {quote('seq')}, {quote('t')}, {quote('type')}, {quote('data')} FROM {quote(Event._meta.db_table)}"
           f" WHERE {quote('run_id')} = %s AND {quote('seq')} > %s")
    params: list[Any] = [run_id, after]
    if upto is not None:
        sql += f" AND {quote('seq')} <= %s"
        params.append(upto)
    with connection.cursor() as cursor:
        cursor.execute(sql + f" ORDER BY {quote('seq')} LIMIT %s", [*params, limit])
        rows = cursor.fetchall()
    return [(seq, encode_record(seq, t, event_type, data)) for seq, t, event_type, data in rows]


def iter_event_rows(run_id: int, chunk_size: int = 2000) -> Iterable[tuple[int, float, str, str]]:
    return (
        Event.objects.filter(run_id=run_id)
        .order_by("seq")
        .values_list("seq", "t", "type", "data")
        .iterator(chunk_size=chunk_size)
    )


def now():
    return timezone.now()


def catch_up_row(run: Run) -> None:
    """Count into the row what the dead run stored after the row's last write.

    A live run rewrites its row (event count, upstream cursor) about once a second but stores its
    events with every batch (streams.live.recorder.ROW_EVERY_S), so the row may be up to a second
    behind the log. Resuming reads the row (the next seq, the cursor to resume the upstream after)
    and an interrupted run's viewers are told its last seq from it: both must see the whole log."""
    after = Event.objects.filter(run_id=run.pk, seq__gte=run.event_count).order_by("seq").values_list("seq", "data")
    last_seq, cursor, response_id = None, run.last_upstream_seq, run.response_id
    for seq, data in after.iterator(chunk_size=500):
        last_seq = seq
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):
            continue
        if not isinstance(payload, dict):
            continue
        if isinstance(payload.get("sequence_number"), int):
            cursor = payload["sequence_number"]  # the recorder keeps only increasing ones
        if not response_id and isinstance(payload.get("response"), dict):
            # The row gets the id in the round's second write: a process that died between the two
            # left it only in the log, and resuming needs it. (Any row written after the event that
            # carried it has it, so it is at or after the row's count.)
            response_id = usable_response_id(payload["response"].get("id"))
    if last_seq is None:
        return
    run.event_count, run.last_upstream_seq, run.response_id = last_seq + 1, cursor, response_id
    Run.objects.filter(pk=run.pk).update(event_count=run.event_count, last_upstream_seq=cursor,
                                         response_id=response_id)
