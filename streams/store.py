"""Database writes and reads on the hot path, in batches, without per-event ORM objects."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, transaction
from django.utils import timezone

from streams.models import Event, Run
from streams.records import encode_record

_INSERT = None


def _insert_sql() -> str:
    global _INSERT
    if _INSERT is None:
        table = connection.ops.quote_name(Event._meta.db_table)
        _INSERT = f"INSERT INTO {table} (run_id, seq, t, type, data) VALUES (%s, %s, %s, %s, %s)"
    return _INSERT


def append_events(run_id: int, rows: Sequence[tuple[int, int, float, str, str]],
                  run_fields: dict[str, Any] | None = None) -> None:
    """Insert a batch of ``(run_id, seq, t, type, data)`` rows and update the run, atomically."""
    with transaction.atomic():
        if rows:
            with connection.cursor() as cursor:
                cursor.executemany(_insert_sql(), rows)
        if run_fields:
            Run.objects.filter(pk=run_id).update(**run_fields)


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
