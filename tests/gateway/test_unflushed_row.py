"""A gateway run whose row was committed without waiting for PostgreSQL's WAL flush (a reserved id,
streams/gateway/run_row.py) and then lost to a crash of the database: the recorder makes the row again
with the same id, so the run never silently vanishes (streams/gateway/recorder.py). The lost row is
played here by deleting it; the foreign key that notices is the same on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async

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
