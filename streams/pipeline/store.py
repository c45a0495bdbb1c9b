"""Database writes and reads on the hot path, in batches, without per-event ORM objects."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction
from django.utils import timezone

from streams.models import Event, Run
from streams.pipeline.rounds import Rounds
from streams.protocol.records import encode_record

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


# SQLite as one statement per batch: the rows travel as one JSON array that SQLite unpacks with
# json_each. executemany steps once per row and Python's sqlite3 lets go of the GIL around every
# step; with the event loop busy in the other thread, taking it back costs up to the interpreter's
# switch interval each time: a thousandfold slowdown (docs/performance.md). One step per
# batch gives the GIL back once. UPDATE ... FROM needs SQLite 3.33.
SQLITE_JSON_BATCHES = sqlite3.sqlite_version_info >= (3, 33)


def _json_batch(values: Sequence[Sequence[Any]]) -> str | None:
    """The values as one JSON array for json_each, or None when SQLite would not give them back
    exactly: its JSON functions end a text at a NUL character (an event type or an output text
    can hold one, unescaped from "\\u0000"), which json.dumps writes as an unescaped \\u0000."""
    if connection.vendor != "sqlite" or not SQLITE_JSON_BATCHES:
        return None
    encoded = json.dumps(values, ensure_ascii=False)
    if "\\u0000" in encoded and _ESCAPED_NUL.search(encoded):
        return None
    return encoded


# \u0000 after an even number of backslashes (zero included): a NUL, not the text "\u0000".
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _execute_unlogged(cursor: Any, sql: str, batch: str) -> None:
    """Execute past Django's debug cursor: with DEBUG on it renders each statement with its
    parameters quoted (by a query of its own) and keeps the last 9,000, and these parameters are
    whole batches of events, megabytes each."""
    with connection.wrap_database_errors:
        cursor.cursor.execute(sql, [batch])


def _json_values(count: int) -> list[str]:
    """SQL for the first ``count`` values of each row of a json_each(...) AS j."""
    return [f"json_extract(j.value, '$[{i}]')" for i in range(count)]


def _sqlite_insert_sql() -> str:
    table = connection.ops.quote_name(Event._meta.db_table)
    columns = ("run_id", "seq", "t", "type", "data")
    values = ", ".join(_json_values(len(columns)))
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} FROM json_each(%s) AS j"


def _insert_rows(rows: Sequence[Row]) -> None:
    """PostgreSQL gets the rows through COPY: one round trip whatever the batch size (about 10x
    faster than executemany for 500 rows, see docs/scaling.md); SQLite one JSON array."""
    if not rows:
        return
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            with cursor.cursor.copy(_copy_sql()) as copy:
                for row in rows:
                    copy.write_row(row)
        elif (batch := _json_batch(rows)) is not None:
            _execute_unlogged(cursor, _sqlite_insert_sql(), batch)
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
FLUSH_FIELDS = frozenset({"event_count", "heartbeat_at", "last_upstream_seq", "response_id", "output_text"})


def append_many(batches: Sequence[Batch]) -> None:
    """Several runs' batches in one transaction: one insert for all rows, then the runs' updates."""
    with transaction.atomic():
        _insert_rows([row for _, rows, _ in batches for row in rows])
        _update_runs([(run_id, fields) for run_id, _, fields in batches if fields])


def _update_runs(updates: Sequence[tuple[int, dict[str, Any]]]) -> None:
    by_columns: dict[tuple[str, ...], list[list[Any]]] = {}
    for run_id, fields in updates:
        if fields.keys() <= FLUSH_FIELDS:
            columns = tuple(sorted(fields))
            by_columns.setdefault(columns, []).append([_db_value(c, fields[c]) for c in columns] + [run_id])
        else:  # the end of a run, or anything unusual: the ORM handles every field type
            Run.objects.filter(pk=run_id).update(**fields)
    if not by_columns:
        return
    quote = connection.ops.quote_name
    table = quote(Run._meta.db_table)
    with connection.cursor() as cursor:
        for columns, params in by_columns.items():
            batch = _json_batch(params)
            if batch is not None:
                # One statement for every run (see _insert_rows); the id is each row's last value.
                values = _json_values(len(columns) + 1)  # the run's id last
                assignments = ", ".join(f"{quote(c)} = {v}" for c, v in zip(columns, values))
                sql = (f"UPDATE {table} SET {assignments} FROM json_each(%s) AS j "
                       f"WHERE {table}.{quote('id')} = {values[-1]}")
                _execute_unlogged(cursor, sql, batch)
                continue
            assignments = ", ".join(f"{quote(column)} = %s" for column in columns)
            cursor.executemany(f"UPDATE {table} SET {assignments} WHERE {quote('id')} = %s", params)


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
        try:
            await database_sync_to_async(append_many)(items)
            return [None] * len(items)
        except Exception:
            pass
        # One bad batch must not fail its neighbours: write each on its own.
        results: list[BaseException | None] = []
        for run_id, rows, run_fields in items:
            try:
                await database_sync_to_async(append_events)(run_id, rows, run_fields)
            except Exception as exc:
                results.append(exc)
            else:
                results.append(None)
        return results


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupWriter] = weakref.WeakKeyDictionary()


async def write_batch(run_id: int, rows: Sequence[Row], run_fields: dict[str, Any] | None = None) -> None:
    """Store a run's batch (and run fields), committed when this returns; grouped with other runs'."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = GroupWriter()
    await writer.write(run_id, rows, run_fields)


def update_run(run_id: int, **fields: Any) -> None:
    Run.objects.filter(pk=run_id).update(**fields)


def encoded_events_after(run_id: int, after: int, limit: int, upto: int | None = None) -> list[tuple[int, str]]:
    """``(seq, encoded record)`` for events with seq > after (and <= upto), in order."""
    events = Event.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    rows = events.order_by("seq").values_list("seq", "t", "type", "data")[:limit]
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
