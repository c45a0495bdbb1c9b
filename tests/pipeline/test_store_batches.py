"""Batched writes on the hot path: group commit across runs, raw updates, COPY/executemany."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from streams.models import Event, Run, RunStatus
from streams.pipeline import store
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


def rows(run_id: int, seqs) -> list[tuple]:
    return [(run_id, s, float(s), "response.output_text.delta", json.dumps({"delta": f"w{s}"})) for s in seqs]


async def test_batches_of_many_runs_are_written_together_with_each_runs_fields(user, monkeypatch):
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING) for _ in range(5)]
    rounds = []
    real = store.append_many
    monkeypatch.setattr(store, "append_many", lambda batches: (rounds.append(len(batches)), real(batches))[1])
    beat = timezone.now() - timedelta(seconds=3)
    first = [store.write_batch(run.pk, rows(run.pk, range(3)), {"event_count": 3, "heartbeat_at": beat})
             for run in runs]
    await asyncio.gather(*first)
    later = [store.write_batch(run.pk, rows(run.pk, range(3, 5)),
                               {"event_count": 5, "heartbeat_at": beat, "output_text": "w0w1", "response_id": "resp_1",
                                "last_upstream_seq": 4})
             for run in runs]
    await asyncio.gather(*later)
    assert sum(rounds) == 10 and len(rounds) < 10  # grouped: fewer transactions than batches
    for run in runs:
        run = await Run.objects.aget(pk=run.pk)
        assert (run.event_count, run.output_text, run.response_id, run.last_upstream_seq) == (5, "w0w1", "resp_1", 4)
        assert run.heartbeat_at == beat
        assert [e async for e in Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True)] \
            == [0, 1, 2, 3, 4]


async def test_final_fields_go_through_the_orm(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    await store.write_batch(run.pk, rows(run.pk, [0]), {"event_count": 1, "status": RunStatus.COMPLETED,
                                                        "metrics": {"events": 1}, "finished_at": timezone.now()})
    run = await Run.objects.aget(pk=run.pk)
    assert run.status == RunStatus.COMPLETED and run.metrics == {"events": 1} and run.finished_at


async def test_one_bad_batch_fails_alone(user):
    good, bad = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING) for _ in range(2)]
    await store.write_batch(bad.pk, rows(bad.pk, [0]), {"event_count": 1})
    results = await asyncio.gather(
        store.write_batch(good.pk, rows(good.pk, [0, 1]), {"event_count": 2}),
        store.write_batch(bad.pk, rows(bad.pk, [0]), {"event_count": 1}),  # seq 0 again: unique violation
        return_exceptions=True,
    )
    assert results[0] is None and isinstance(results[1], Exception)
    assert await Event.objects.filter(run=good).acount() == 2
    assert (await Run.objects.aget(pk=good.pk)).event_count == 2


TRICKY = ["héllo 🎉", 'quote " back \\ slash \n new line \t tab', '{"delta":"\\u0000 escaped, not a NUL"}',
          "\u2028\u2029", "\x7f", "x" * 300_000, ""]


@pytest.mark.parametrize("one_statement", [True, False], ids=["one-statement", "executemany"])
async def test_every_value_is_stored_exactly_whichever_way_the_batch_goes(user, monkeypatch, one_statement):
    monkeypatch.setattr(store, "SQLITE_ONE_STATEMENT", one_statement)
    monkeypatch.setattr(store, "SQLITE_ROWS_PER_STATEMENT", 3)  # several statements per batch too
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING) for _ in range(2)]
    batch = []
    for run in runs:
        batch.append((run.pk, [(run.pk, seq, 1234.5678901234567 * (seq + 1) / 3, f"type.{seq}", text)
                               for seq, text in enumerate(TRICKY)],
                      {"event_count": len(TRICKY), "output_text": TRICKY[1] + TRICKY[0], "response_id": "resp_ü",
                       "last_upstream_seq": None, "heartbeat_at": timezone.now()}))
    # A NUL in a type or text is kept whole (bound parameters, not text SQLite parses).
    batch[1][1].append((runs[1].pk, len(TRICKY), 0.5, "odd\x00type", "{}"))
    batch[1][2]["output_text"] = "before\x00after"
    await sync_to_async(store.append_many)(batch[:1])
    await sync_to_async(store.append_many)(batch[1:])
    for run, (_, written, fields) in zip(runs, batch):
        stored = [row async for row in Event.objects.filter(run=run).order_by("seq")
                  .values_list("run_id", "seq", "t", "type", "data")]
        assert stored == written
        # As stored (a Run read through the model shows a NUL as U+FFFD: streams.models.Run.from_db).
        row = await Run.objects.filter(pk=run.pk).values_list(
            "output_text", "response_id", "last_upstream_seq", "heartbeat_at").aget()
        assert row == (fields["output_text"], "resp_ü", None, fields["heartbeat_at"])


async def test_many_runs_fields_in_chunks(user, monkeypatch):
    monkeypatch.setattr(store, "SQLITE_ROWS_PER_STATEMENT", 2)
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING) for _ in range(5)]
    await sync_to_async(store.append_many)([(run.pk, rows(run.pk, range(i + 1)), {"event_count": i + 1})
                                             for i, run in enumerate(runs)])
    for i, run in enumerate(runs):
        assert (await Run.objects.aget(pk=run.pk)).event_count == i + 1
        assert await Event.objects.filter(run=run).acount() == i + 1


async def test_batches_stay_out_of_the_debug_query_log(user, settings):
    """With DEBUG on, Django keeps each statement with its parameters; a batch is megabytes."""
    from django.db import connection, reset_queries

    if not store.SQLITE_ONE_STATEMENT or connection.vendor != "sqlite":
        pytest.skip("the one-statement batch is SQLite's path")
    settings.DEBUG = True
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    big = [(run.pk, seq, 0.0, "t", "x" * 100_000) for seq in range(20)]

    def write_and_log() -> list[dict]:
        reset_queries()
        store.append_many([(run.pk, big, {"event_count": 20})])
        return list(connection.queries)

    logged = await sync_to_async(write_and_log)()
    assert sum(len(q["sql"]) for q in logged) < 10_000
    assert await Event.objects.filter(run=run).acount() == 20


def test_chunk_sizes_are_a_few_fixed_statements():
    assert store.chunk_sizes(0) == []
    assert store.chunk_sizes(3) == [(3, 16)]
    assert store.chunk_sizes(16) == [(16, 16)]
    assert store.chunk_sizes(1330) == [(1000, 1000), (250, 250), (64, 64), (16, 16)]
    assert store.chunk_sizes(1331) == [(1000, 1000), (250, 250), (64, 64), (16, 16), (1, 16)]
    for count in range(0, 2100):
        chunks = store.chunk_sizes(count)
        assert sum(rows for rows, _ in chunks) == count
        assert all(0 < rows <= size for rows, size in chunks)
        assert {size for _, size in chunks} <= set(store.SQLITE_CHUNK_ROWS)


async def test_batches_of_every_size_reuse_a_few_statement_texts(user, monkeypatch):
    """A statement text per batch size missed SQLite's small statement cache nearly every round
    (preparing a statement cost more than inserting its rows): a few sizes, padded, instead."""
    from django.db import connection

    if not store.SQLITE_ONE_STATEMENT or connection.vendor != "sqlite":
        pytest.skip("the one-statement batch is SQLite's path")
    texts: set[str] = set()
    real = store._execute_unlogged

    def execute(cursor, sql, params):
        texts.add(sql)
        real(cursor, sql, params)

    monkeypatch.setattr(store, "_execute_unlogged", execute)
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING) for _ in range(40)]
    written: dict[int, int] = {run.pk: 0 for run in runs}
    # Batches of 1 to 300 rows over many rounds, and a round updating 1 to 40 runs' rows.
    for size in [*range(1, 80), 123, 250, 251, 299, 300, 1000, 1017]:
        batches = []
        for run in runs[:size % 40 + 1]:
            first = written[run.pk]
            take = max(1, size // (size % 40 + 1))
            batches.append((run.pk, rows(run.pk, range(first, first + take)), {"event_count": first + take}))
            written[run.pk] = first + take
        await sync_to_async(store.append_many)(batches)
    inserts = {sql for sql in texts if sql.startswith("INSERT")}
    updates = {sql for sql in texts if sql.startswith("UPDATE")}
    assert len(inserts) <= len(store.SQLITE_CHUNK_ROWS) + 1, len(inserts)
    assert len(updates) <= len(store.SQLITE_CHUNK_ROWS), len(updates)
    for run in runs:
        assert await Event.objects.filter(run=run).acount() == written[run.pk]
        assert [s async for s in Event.objects.filter(run=run).order_by("seq").values_list("seq", flat=True)] \
            == list(range(written[run.pk]))
        assert (await Run.objects.aget(pk=run.pk)).event_count == written[run.pk]


async def test_a_run_named_twice_in_a_round_keeps_its_later_fields_whatever_their_columns(user):
    # Grouped by column set, a round used to write a run's later fields before its earlier ones when
    # another run had made the later fields' column set first, or when the later fields ended the run
    # through the ORM: the earlier event count then overwrote the final one.
    other, run = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING) for _ in range(2)]
    await sync_to_async(store.append_many)([
        (other.pk, rows(other.pk, range(1)), {"event_count": 1}),
        (run.pk, rows(run.pk, range(2)), {"event_count": 2, "output_text": "w0w1"}),
        (run.pk, rows(run.pk, range(2, 3)), {"event_count": 3}),
    ])
    assert (await Run.objects.aget(pk=run.pk)).event_count == 3
    await sync_to_async(store.append_many)([
        (run.pk, rows(run.pk, range(3, 4)), {"event_count": 4}),
        (run.pk, rows(run.pk, range(4, 5)), {"event_count": 5, "status": RunStatus.COMPLETED}),
    ])
    ended = await Run.objects.aget(pk=run.pk)
    assert (ended.event_count, ended.status, ended.output_text) == (5, RunStatus.COMPLETED, "w0w1")
