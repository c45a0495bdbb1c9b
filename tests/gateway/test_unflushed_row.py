"""A gateway run whose row was committed without waiting for PostgreSQL's WAL flush (a reserved id,
streams/gateway/run_row.py) and then lost to a crash of the database: the recorder makes the row again
with the same id, so the run never silently vanishes (streams/gateway/recorder.py). The lost row is
played here by deleting it; the foreign key that notices is the same on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError

from streams.gateway import proxy
from streams.gateway.recorder import GatewayRecorder
from streams.models import Event, Run, RunStatus
from streams.upstream.providers import get_provider

pytestmark = pytest.mark.django_db(transaction=True)

DELTA = (b'event: response.output_text.delta\n'
         b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":"hello"}\n\n')


def saved_run(user) -> Run:
    request = proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses", query="",
                                   body=b"{}", owner=user)
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi"}, background=False)
    run = proxy._new_run(request, fields, fields.model)
    run.save(force_insert=True)
    return run


async def recording_of_a_lost_row(user) -> tuple[Run, GatewayRecorder]:
    run = await sync_to_async(saved_run)(user)
    recorder = GatewayRecorder(run.pk, "responses")
    recorder.begin(run, [])
    recorder.unflushed_row = run
    await Run.objects.filter(pk=run.pk).adelete()  # what a crash of PostgreSQL before the flush did
    return run, recorder


async def test_a_row_lost_before_its_events_were_stored_is_made_again_and_keeps_them(user):
    run, recorder = await recording_of_a_lost_row(user)
    recorder.take(DELTA, 1.0)
    recorder.take_end(2.0)
    await recorder.end(RunStatus.COMPLETED, None)
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.status == RunStatus.COMPLETED and stored.event_count == 1
    assert stored.owner_id == user.pk and stored.source == "gateway" and stored.request == run.request
    assert await Event.objects.filter(run_id=run.pk).acount() == 1
    assert stored.error["code"] == "recording_retried"  # nothing was lost, and the run says what happened
    assert "made again with the same id" in stored.error["message"]


async def test_a_row_lost_by_a_run_that_stored_no_event_is_made_again_before_its_end(user):
    run, recorder = await recording_of_a_lost_row(user)
    await recorder.end(RunStatus.FAILED, {"code": "http_error", "http_status": 500, "body": "boom"})
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.status == RunStatus.FAILED and stored.error["code"] == "http_error"
    assert "made again" in stored.error["recording"]


async def test_once_events_are_stored_the_row_is_no_longer_watched(user):
    run = await sync_to_async(saved_run)(user)
    recorder = GatewayRecorder(run.pk, "responses")
    recorder.begin(run, [])
    recorder.unflushed_row = run
    recorder.take(DELTA, 1.0)
    await recorder.flush()
    assert recorder.unflushed_row is None  # their commit waited for the flush, which covered the row
    await recorder.end(RunStatus.COMPLETED, None)
    stored = await Run.objects.aget(pk=run.pk)
    assert stored.error is None and stored.event_count == 1


async def test_an_unanswered_insert_sent_again_is_still_watched_for_a_lost_row(user, monkeypatch):
    """The unanswered INSERT did reach the server and committed without the flush: sent again, it
    finds the row there, which a crash can still lose (found in review: it was not watched)."""
    from streams.gateway import run_row

    async def sent_unanswered(run, sent_before):
        await sync_to_async(Run(**{f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields}).save)(
            force_insert=True)  # the server made the row, and its answer was lost
        raise run_row.MaybeInserted("connection lost")

    monkeypatch.setattr(run_row, "insert_here", lambda run, reserved=False, sent_before=False: False)
    monkeypatch.setattr(run_row, "insert_reserved_on_loop", sent_unanswered)
    monkeypatch.setattr(run_row, "_unflushed_inserts", lambda: True)  # as on PostgreSQL
    request = proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses", query="",
                                   body=b"{}", owner=user)
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi"}, background=False)
    run = proxy._new_run(request, fields, fields.model)
    run.pk = 4242
    recorder = proxy._recorder(run, "responses", fields, run_row.PendingRow(run))
    recorder.begin(run, [])
    await recorder.ensure_row()
    assert recorder.unflushed_row is run
    await Run.objects.filter(pk=run.pk).adelete()  # a crash of PostgreSQL before the flush
    recorder.take(DELTA, 1.0)
    recorder.take_end(2.0)
    await recorder.end(RunStatus.COMPLETED, None)
    stored = await Run.objects.aget(pk=4242)
    assert stored.status == RunStatus.COMPLETED and await Event.objects.filter(run_id=4242).acount() == 1


async def test_a_row_made_again_beats_now_so_no_sweep_takes_the_live_run_for_an_orphan(user, monkeypatch):
    """The row comes back with a heartbeat of now, not of the run's start (found in review: a sweep on
    another host took a live gateway run re-made 15 s after it began for an orphan)."""
    import time
    from datetime import timedelta

    from django.utils import timezone

    from streams.live import recovery

    run = await sync_to_async(saved_run)(user)
    began = timezone.now() - timedelta(seconds=15)  # PostgreSQL's recovery took a while
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=began, created_at=began, started_at=began)
    run = await Run.objects.aget(pk=run.pk)
    recorder = GatewayRecorder(run.pk, "responses")
    recorder.begin(run, [])
    recorder.unflushed_row = run
    await Run.objects.filter(pk=run.pk).adelete()
    recorder._last_row_save = time.monotonic()  # a row write (of no row) just happened: no new one soon
    recorder.take(DELTA, 1.0)
    with pytest.raises(IntegrityError):
        await recorder.flush()  # the foreign key finds no run: the row is made again
    await recorder.flush()
    monkeypatch.setattr(recovery, "WORKER_NAME", "elsewhere:1")
    monkeypatch.setattr(recovery, "HOST", "elsewhere")
    orphans = await sync_to_async(recovery.find_orphans)()
    assert run.pk not in [orphan.pk for orphan in orphans]
    recorder.take_end(2.0)
    await recorder.end(RunStatus.COMPLETED, None)
