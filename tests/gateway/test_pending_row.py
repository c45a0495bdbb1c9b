"""A gateway run whose id is reserved ahead (streams/gateway/run_row.py: RunIds, PendingRow): the
client gets the answer's head and first bytes before the run's row is inserted, the row goes in before
any of its events are stored, a failed insert is tried again without the client noticing, and on
SQLite the reserved ids move AUTOINCREMENT's counter so no other writer's run can take one."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from datetime import timedelta
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.db import OperationalError, connection
from django.utils import timezone

from streams.gateway import proxy, run_row
from streams.gateway.recorder import GatewayRecorder
from streams.live import recovery
from streams.models import Event, Run, RunStatus
from streams.pipeline import store
from streams.upstream.providers import get_provider

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = (b'event: response.output_text.delta\n'
         b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"hello"}\n\n')
STREAMED = {"model": "sim-text", "input": "Why is the sky blue?", "stream": True,
            "metadata": {"sim_seed": "7", "sim_tokens_per_s": "max"}}


def gateway_request(user, body: dict | None = None) -> proxy.GatewayRequest:
    return proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses", query="",
                                body=json.dumps(body or {}).encode(), owner=user)


def new_run(user) -> Run:
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi"}, background=False)
    return proxy._new_run(gateway_request(user), fields, fields.model)


def orm_run(user) -> Run:
    run = new_run(user)
    run.save(force_insert=True)
    return run


async def reserved_run(user) -> Run:
    """A gateway run holding an id reserved ahead, its row not inserted."""
    run = new_run(user)
    run.pk = (await sync_to_async(run_row.reserve_ids)(1))[0]
    return run


def pending_recorder(run: Run) -> GatewayRecorder:
    """The recorder of ``run``, whose row is still to be inserted (as proxy.forward makes it)."""
    recorder = GatewayRecorder(run.pk, "responses")
    recorder.pending_row = run_row.PendingRow(run)
    recorder.begin(run, [])
    return recorder


def refuse_row_inserts(monkeypatch, times: int | None) -> list[int]:
    """The row's insert on the database thread refused its first ``times`` tries (every one when
    None); returns the runs' ids of every try, refused or not."""
    real = run_row.insert_again
    tries: list[int] = []

    def refusing(run: Run) -> bool:
        tries.append(run.pk)
        if times is None or len(tries) <= times:
            raise OperationalError("database is locked")
        return real(run)

    monkeypatch.setattr(run_row, "insert_again", refusing)
    return tries


async def ended_run(run_id: int, timeout: float = 10.0) -> Run:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        run = await Run.objects.filter(pk=run_id).afirst()
        if (run is not None and run.status not in (RunStatus.QUEUED, RunStatus.STREAMING)) or loop.time() > deadline:
            return run
        await asyncio.sleep(0.05)


# --- SQLite: ids reserved by moving AUTOINCREMENT's counter -------------------------------------

def test_sqlite_reserved_ids_are_skipped_by_every_other_writer_and_committed_with_a_disk_sync(user):
    before = orm_run(user)
    statements: list[str] = []

    def seen(execute, sql, params, many, context):
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        level = cursor.execute("PRAGMA synchronous").fetchone()[0]
    with connection.execute_wrapper(seen):
        ids = run_row.reserve_ids(4)
    assert ids == [before.pk + 1, before.pk + 2, before.pk + 3, before.pk + 4]
    other = orm_run(user)  # another writer's run, inserted while the block is held
    assert other.pk > max(ids)
    # The reservation's commit waits for the disk; the connection is left as it was.
    update = next(i for i, sql in enumerate(statements) if sql.startswith("UPDATE sqlite_sequence"))
    assert any(sql == "PRAGMA synchronous=FULL" for sql in statements[:update])
    assert statements[-1] == f"PRAGMA synchronous={level}"
    with connection.cursor() as cursor:
        assert cursor.execute("PRAGMA synchronous").fetchone()[0] == level
    # Used later, the reserved ids still fit beside the other writer's run; the next block starts past both.
    for pk in ids:
        run = new_run(user)
        run.pk = pk
        assert run_row.insert_again(run)
    assert run_row.reserve_ids(2)[0] == other.pk + 1
    assert Run.objects.count() == 6


def test_sqlite_reserves_ids_on_a_table_autoincrement_has_never_counted(user):
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM sqlite_sequence WHERE name = %s", [Run._meta.db_table])
    ids = run_row.reserve_ids(3)
    assert ids == [1, 2, 3]
    assert orm_run(user).pk == 4


# --- the row after the first bytes -------------------------------------------------------------

async def reserve_for_this_loop(count: int = 4) -> list[int]:
    ids = await sync_to_async(run_row.reserve_ids)(count)
    held = run_row.run_ids()
    held.ids.clear()
    held.ids.extend(ids)
    return ids


@pytest.mark.server
async def test_the_answers_head_and_first_bytes_go_out_before_the_runs_row_is_inserted(sim_upstream, user,
                                                                                        monkeypatch):
    monkeypatch.setattr(proxy, "ROW_AFTER_SEND_S", 60.0)  # a fast provider: its first bytes come well before
    ids = await reserve_for_this_loop()
    answer = await proxy.forward(gateway_request(user, STREAMED))
    assert answer.relay is not None and answer.run_id == ids[0]  # an id of the reserved block
    assert answer.headers["x-streamscope-run"] == str(ids[0])
    assert not await Run.objects.filter(pk=answer.run_id).aexists()  # the head is ready, the row not yet

    sent: list[bytes] = []
    row_at_first_bytes: list[bool] = []

    async def send(chunk: bytes) -> None:
        if not sent:
            row_at_first_bytes.append(await Run.objects.filter(pk=answer.run_id).aexists())
        sent.append(chunk)

    await answer.relay.relay(send)
    assert row_at_first_bytes == [False]
    run = await ended_run(answer.run_id)
    assert run.status == RunStatus.COMPLETED and run.source == "gateway" and run.owner_id == user.pk
    assert run.error is None  # no write of its events failed: the row was there before them
    stored = await sync_to_async(list)(Event.objects.filter(run_id=run.pk).values_list("data", flat=True))
    assert len(stored) == run.event_count > 0
    assert b"".join(sent).count(b"\ndata: ") == len(stored)


@pytest.mark.server
async def test_a_failed_insert_after_the_head_is_tried_again_and_noted_and_the_stream_completes(
        sim_upstream, user, monkeypatch):
    await reserve_for_this_loop()
    tries = refuse_row_inserts(monkeypatch, 2)
    answer = await proxy.forward(gateway_request(user, STREAMED))
    sent: list[bytes] = []

    async def send(chunk: bytes) -> None:
        sent.append(chunk)

    await answer.relay.relay(send)
    assert b"response.completed" in b"".join(sent)  # the client's stream was whole
    run = await ended_run(answer.run_id)
    assert len(tries) == 3  # two refused, the third inserted it
    assert run.status == RunStatus.COMPLETED
    assert run.error["code"] == "recording_retried"
    assert "inserting the run's row failed 2 time(s)" in run.error["message"]
    assert await Event.objects.filter(run_id=run.pk).acount() == run.event_count > 0


@pytest.mark.server
async def test_a_row_that_cannot_be_inserted_at_all_leaves_the_clients_stream_whole(sim_upstream, user, monkeypatch,
                                                                                    caplog):
    await reserve_for_this_loop()
    refuse_row_inserts(monkeypatch, None)
    answer = await proxy.forward(gateway_request(user, STREAMED))
    sent: list[bytes] = []

    async def send(chunk: bytes) -> None:
        sent.append(chunk)

    with caplog.at_level("ERROR", logger="streams.gateway.recorder"):
        await answer.relay.relay(send)
        for _ in range(100):
            if any("could not be inserted" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
    assert b"response.completed" in b"".join(sent)
    assert any("could not be inserted" in r.getMessage() for r in caplog.records)
    assert not await Run.objects.filter(pk=answer.run_id).aexists()


WHOLE_SLOW = {"model": "sim-text", "input": "Why is the sky blue?", "stream": False,
              "metadata": {"sim_seed": "7", "sim_tokens_per_s": "40"}}


@pytest.mark.server
async def test_a_slow_providers_run_has_its_row_while_the_answer_is_generated_created_when_it_arrived(
        sim_upstream, user):
    await reserve_for_this_loop()
    forwarding = asyncio.ensure_future(proxy.forward(gateway_request(user, WHOLE_SLOW)))  # ~3 s to answer
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 1.0
    while not await Run.objects.filter(owner=user).aexists() and loop.time() < deadline:
        await asyncio.sleep(0.02)
    assert not forwarding.done()  # the provider is still generating the whole answer
    streaming = await Run.objects.aget(owner=user)  # seen by the live wall, the API and recovery
    assert streaming.status == RunStatus.STREAMING
    answer = await forwarding
    run = await ended_run(answer.run_id)
    assert run.pk == streaming.pk and run.status == RunStatus.COMPLETED
    assert run.error is None  # the row's insert was not noted as late or failed
    assert run.created_at == run.started_at  # the request's arrival, not the insert's time


async def test_a_late_rows_created_at_is_the_requests_arrival_and_its_heartbeat_fresh(user, monkeypatch):
    """A row inserted long after the request began (a slow provider, a retried insert) is dated from
    the request, and beats now: another process's recovery sweep does not take it for an orphan."""
    run = new_run(user)
    run.heartbeat_at = run.started_at = timezone.now() - timedelta(seconds=90)  # a 90 s whole answer
    run.pk = (await sync_to_async(run_row.reserve_ids)(1))[0]
    recorder = pending_recorder(run)
    await recorder.ensure_row()  # what the end does first, before it writes the outcome
    monkeypatch.setattr(recovery, "WORKER_NAME", "other-host:1")  # another process sweeps now
    orphans = await sync_to_async(recovery.find_orphans)()
    assert run.pk not in [orphan.pk for orphan in orphans]
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.created_at == stored.started_at == run.started_at
    await recorder.end(RunStatus.COMPLETED, None)


async def test_flushes_waiting_for_the_row_share_no_batch_so_failed_writes_lose_no_event(user, monkeypatch):
    """Two flushes (a clock tick and a kick) wait for a slow row insert, then their writes fail: each
    puts back only the batch it took, and the events relayed meanwhile are kept."""
    run = await reserved_run(user)
    recorder = pending_recorder(run)
    real_insert = run_row.PendingRow._insert

    async def slow_insert(self):  # the database thread busy or locked
        await asyncio.sleep(0.05)
        return await real_insert(self)

    monkeypatch.setattr(run_row.PendingRow, "_insert", slow_insert)
    real_write = store.write_batch
    failing = True

    async def write_batch(run_id, rows, fields):  # the database refuses the writes after the row went in
        if failing:
            await asyncio.sleep(0.05)
            raise OperationalError("database is locked")
        return await real_write(run_id, rows, fields)

    monkeypatch.setattr(store, "write_batch", write_batch)
    recorder.take(DELTA, 1.0)  # seq 0
    tick = asyncio.ensure_future(recorder.flush())
    await asyncio.sleep(0)
    kick = asyncio.ensure_future(recorder.flush())  # the flush lock is not held while the row is waited for
    await asyncio.sleep(0.07)  # the row is in; a write is on its way
    recorder.take(DELTA.replace(b'"sequence_number":1', b'"sequence_number":2'), 2.0)  # seq 1, relayed meanwhile
    await asyncio.gather(tick, kick, return_exceptions=True)
    failing = False
    await recorder.end(RunStatus.COMPLETED, None)
    stored = await sync_to_async(list)(Event.objects.filter(run_id=run.pk).values_list("seq", flat=True))
    assert sorted(stored) == [0, 1]
    assert (await Run.objects.aget(pk=run.pk)).event_count == 2


async def test_a_taken_id_is_still_told_apart_after_a_failed_try_on_sqlite(user, monkeypatch):
    """A failed insert on SQLite leaves nothing: a row found with the id on the next try is not this
    run's, and nothing is written into it."""
    other = await sync_to_async(orm_run)(user)  # what should never be: a row already holding the id
    tries = refuse_row_inserts(monkeypatch, 1)
    run = new_run(user)
    run.pk = other.pk
    recorder = pending_recorder(run)
    recorder.take(DELTA, 1.0)
    with pytest.raises(OperationalError):
        await recorder.flush()
    await recorder.flush()
    await recorder.end(RunStatus.COMPLETED, None)
    assert len(tries) == 2 and recorder.foreign_row
    kept = await Run.objects.aget(pk=other.pk)
    assert kept.status == RunStatus.STREAMING and kept.event_count == 0 and kept.error is None
    assert await Event.objects.filter(run_id=other.pk).acount() == 0


async def test_a_failed_row_insert_is_noted_once_not_as_a_failed_write(user, monkeypatch):
    refuse_row_inserts(monkeypatch, 1)
    run = await reserved_run(user)
    recorder = pending_recorder(run)
    recorder.take(DELTA, 1.0)
    with pytest.raises(OperationalError):
        await recorder.flush()
    await recorder.end(RunStatus.COMPLETED, None)
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.event_count == 1
    assert stored.error["code"] == "recording_retried"
    assert "inserting the run's row failed 1 time(s)" in stored.error["message"]
    assert "database writes failed" not in stored.error["message"]


async def test_the_recorders_first_write_inserts_the_row_before_its_events(user):
    run = await reserved_run(user)
    recorder = pending_recorder(run)
    recorder.take(DELTA, 1.0)
    await recorder.flush()
    assert await Event.objects.filter(run_id=run.pk).acount() == 1
    assert recorder.pending_row is None and recorder.failed_writes == 0
    await recorder.end(RunStatus.COMPLETED, None)
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.status == RunStatus.COMPLETED and stored.event_count == 1 and stored.error is None


async def test_a_run_with_no_event_gets_its_row_with_its_end(user):
    run = await reserved_run(user)
    recorder = pending_recorder(run)
    await recorder.end(RunStatus.FAILED, {"code": "http_error", "http_status": 500, "body": "boom"})
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.status == RunStatus.FAILED and stored.error["code"] == "http_error"


async def test_a_reserved_id_found_taken_by_another_run_is_never_written_to(user):
    other = await sync_to_async(orm_run)(user)  # what should never be: a row already holding the id
    run = new_run(user)
    run.pk = other.pk
    recorder = pending_recorder(run)
    recorder.take(DELTA, 1.0)
    await recorder.flush()
    await recorder.end(RunStatus.COMPLETED, None)
    kept = await Run.objects.aget(pk=other.pk)
    assert kept.status == RunStatus.STREAMING and kept.event_count == 0 and kept.error is None
    assert await Event.objects.filter(run_id=other.pk).acount() == 0


def test_a_reserved_insert_here_is_the_orms_row_and_a_taken_id_is_told_apart(tmp_path, user, monkeypatch):
    path = tmp_path / "db.sqlite3"
    connection.ensure_connection()
    target = sqlite3.connect(path)
    connection.connection.backup(target)
    target.close()
    run = new_run(user)
    run.pk = 777
    assert run_row.insert_here(run, reserved=True) is False  # the test database is in memory
    database = {**connection.settings_dict, "NAME": str(path)}
    with monkeypatch.context() as patched:
        patched.setattr(run_row, "settings", SimpleNamespace(DATABASES={"default": database}))
        assert run_row.insert_here(run, reserved=True)
        assert run.pk == 777 and not run._state.adding
        assert run.created_at == run.started_at  # the request's arrival, not the insert's time
        again = new_run(user)
        again.pk = 777
        with pytest.raises(run_row.IdTaken):  # never sent before: the row is someone else's
            run_row.insert_here(again, reserved=True)
        assert run_row.insert_here(again, reserved=True, sent_before=True)  # an earlier try of its own made it
    stored = sqlite3.connect(path).execute('SELECT source, status, owner_id, created_at = started_at '
                                           'FROM "streams_run" WHERE id = 777')
    assert stored.fetchall() == [("gateway", "streaming", user.pk, 1)]
