"""A gateway run created beside its request whose recorder never began, or began late, is still ended:
by the gateway when it fails itself, by this process's recovery sweep when its client left while the
row was being inserted (found by the ninth session's second review; each failed before its fix)."""

from __future__ import annotations

import asyncio
import json

import pytest
from channels.db import database_sync_to_async
from django.test import AsyncClient

from streams.gateway import proxy
from streams.live import recovery
from streams.models import Run, RunStatus
from streams.pipeline.flush_clock import flush_clock

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]


def _beating(pk):
    return [r for r in flush_clock().runs if getattr(r, "run_id", None) == pk]


async def whole_answer_asked(token):
    """A non-streamed request through Django's view path (the gateway's answer, a 500 included)."""
    body = {"model": "sim-text", "input": "hi", "stream": False}
    return await AsyncClient(raise_request_exception=False).post(
        "/gateway/simulator/v1/responses", json.dumps(body), content_type="application/json",
        headers={"Authorization": f"Bearer {token}"})


async def ended_run() -> Run:
    """The one run, once it has left streaming (or as it is after 5 s)."""
    for _ in range(100):
        run = await Run.objects.afirst()
        if run is not None and run.status != RunStatus.STREAMING:
            return run
        await asyncio.sleep(0.05)
    return await Run.objects.aget()


async def test_race_send_fails_in_the_same_tick_as_the_run_is_created(sim_upstream, token, monkeypatch):
    """_send's failure resumed forward before the run's recorder began (its callback queued behind):
    the callback then began a recorder nobody ended, beating for good."""
    monkeypatch.setattr(proxy, "take_reserved_id", lambda: None)
    created = asyncio.Event()
    real = proxy._create_run

    async def create_beside(request, fields, kind):
        run = await database_sync_to_async(real)(request, fields, kind)
        created.set()  # forward's wake-up is queued before the task's done callbacks
        return run

    async def broken(request, headers):
        await created.wait()
        raise ValueError("a bug of ours")

    monkeypatch.setattr(proxy, "_create_run_beside", create_beside)
    monkeypatch.setattr(proxy, "_send", broken)
    assert (await whole_answer_asked(token)).status_code == 500
    await asyncio.sleep(1.0)
    run = await Run.objects.aget()
    beating = _beating(run.pk)
    for r in beating:  # tidy up
        flush_clock().unregister(r)
    assert not beating, "a recorder begun after forward gave up beats for good"
    assert run.status != RunStatus.STREAMING


async def test_a_failure_of_ours_before_the_row_is_in_ends_the_run_once_it_is(
        sim_upstream, token, settings, monkeypatch):
    """A failure of ours before the run's row is in: the run ends failed once it is (573d184 left it
    to recovery, which in one process never came)."""
    settings.STREAMSCOPE_STALE_AFTER_S = 0.2
    monkeypatch.setattr(proxy, "take_reserved_id", lambda: None)

    async def broken(request, headers):
        raise ValueError("a bug of ours")  # before the run's row is in

    monkeypatch.setattr(proxy, "_send", broken)
    assert (await whole_answer_asked(token)).status_code == 500
    run = await ended_run()
    assert not _beating(run.pk)
    assert run.status == RunStatus.FAILED and run.error["code"] == "internal"


async def test_a_run_whose_client_left_while_its_row_was_being_inserted_is_recovered_here(
        sim_upstream, token, settings, monkeypatch):
    """The client leaves after the provider's head while the run's row is still being inserted (the
    database thread's answer late): the insert lands, no recorder begins. This process's sweep takes
    such a silent run of its own (264dbbf took only runs whose end's write failed)."""
    settings.STREAMSCOPE_STALE_AFTER_S = 0.2
    monkeypatch.setattr(proxy, "take_reserved_id", lambda: None)
    real = proxy._create_run

    async def slow_reply(request, fields, kind):
        run = await database_sync_to_async(real)(request, fields, kind)  # the row is in
        await asyncio.sleep(1.0)  # the database thread's reply, late
        return run

    monkeypatch.setattr(proxy, "_create_run_beside", slow_reply)
    body = {"model": "sim-text", "input": "hi", "stream": True}
    request = asyncio.ensure_future(AsyncClient().post(
        "/gateway/simulator/v1/responses", json.dumps(body), content_type="application/json",
        headers={"Authorization": f"Bearer {token}"}))
    await asyncio.sleep(0.5)
    request.cancel()
    try:
        await request
    except BaseException:
        pass
    await asyncio.sleep(1.5)  # silent for over six times STREAMSCOPE_STALE_AFTER_S
    taken = await recovery.recover_once()
    run = await Run.objects.aget()
    assert taken == [run.pk] or run.status != RunStatus.STREAMING, (
        f"run {run.pk} stays {run.status} after its client left; no recorder, no sweep takes it")


async def test_a_gateway_end_being_tried_again_is_not_the_sweep_s_until_given_up(monkeypatch):
    """RunRecorder._finish marks a run whose end's write failed for the sweep; the gateway tries its end
    again a few times: between tries the run is not the sweep's (it could end it interrupted, and a
    later try overwrite that), only once the last try failed."""
    from streams.gateway import recorder as gateway_recorder
    from streams.live.recorder import unended

    recorder = gateway_recorder.GatewayRecorder(4242, "responses")
    marked_between_tries = []

    async def failing(status, error):
        unended.add(recorder.run_id)  # what a failed end's write does (RunRecorder._finish)
        raise RuntimeError("the database is gone")

    async def no_wait(seconds):
        marked_between_tries.append(recorder.run_id in unended)

    monkeypatch.setattr(recorder, "_finish", failing)
    monkeypatch.setattr(gateway_recorder.asyncio, "sleep", no_wait)
    try:
        await recorder.end(RunStatus.COMPLETED, None)
        assert marked_between_tries == [False] * gateway_recorder.FINAL_ATTEMPTS
        assert recorder.run_id in unended  # given up: the sweep's
    finally:
        unended.discard(recorder.run_id)


async def test_a_failure_of_ours_before_the_answer_ends_a_run_begun_early(sim_upstream, token, monkeypatch):
    """A recorder begun before the answer's head must not beat for good when the gateway itself fails."""
    monkeypatch.setattr(proxy, "take_reserved_id", lambda: None)

    async def broken(request, headers):
        await asyncio.sleep(0.3)  # the run is in and its recorder begun by now
        raise ValueError("a bug of ours")

    monkeypatch.setattr(proxy, "_send", broken)
    assert (await whole_answer_asked(token)).status_code == 500
    run = await ended_run()
    assert run.status == RunStatus.FAILED and run.error["code"] == "internal"
    assert not _beating(run.pk)
