"""The recovery sweep's look at other processes' runs (streams/live/recovery.find_orphans): every
process makes it every 2 s over every active run another process holds, so it reads the few columns
it judges by and loads only orphans whole; a run that beats between the two reads is not taken."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from streams.live import recovery
from streams.models import Run, RunStatus
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db


def live_worker() -> str:
    return f"{recovery.HOST}:{os.getppid()}"  # a live process on this host (the one that started the tests)


def test_a_sweep_over_runs_held_by_live_processes_loads_none_of_them(user, settings):
    settings.STREAMSCOPE_STALE_AFTER_S = 10
    for _ in range(5):
        make_run(user, status=RunStatus.STREAMING, worker=live_worker(), heartbeat_at=timezone.now(),
                 output_text="word " * 1000)
    with CaptureQueriesContext(connection) as queries:
        assert recovery.find_orphans() == []
    assert len(queries) == 1
    assert "output_text" not in queries[0]["sql"] and '"request"' not in queries[0]["sql"]


def test_orphans_come_whole_and_a_worker_is_asked_once(user, settings, monkeypatch):
    settings.STREAMSCOPE_STALE_AFTER_S = 10
    dead = f"{recovery.HOST}:999999999"
    orphans = [make_run(user, status=RunStatus.STREAMING, worker=dead, heartbeat_at=timezone.now(),
                        output_text="kept text", response_id="resp_1", last_upstream_seq=7) for _ in range(3)]
    asked = []
    process_alive = recovery._process_alive
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: asked.append(worker) or process_alive(worker))
    found = recovery.find_orphans()
    assert [run.pk for run in found] == [run.pk for run in orphans]
    assert asked == [dead]
    with CaptureQueriesContext(connection) as queries:  # recovery reads these without another query
        assert [(r.output_text, r.response_id, r.last_upstream_seq, r.background) for r in found] == [
            ("kept text", "resp_1", 7, False)] * 3
    assert len(queries) == 0


def test_a_run_that_beats_after_it_was_judged_is_not_taken_over(user, settings, monkeypatch):
    settings.STREAMSCOPE_STALE_AFTER_S = 10
    elsewhere = "other-host:123"
    slow = make_run(user, status=RunStatus.STREAMING, worker=elsewhere,
                    heartbeat_at=timezone.now() - timedelta(seconds=20))
    silent = make_run(user, status=RunStatus.STREAMING, worker="another-host:9",
                      heartbeat_at=timezone.now() - timedelta(seconds=20))

    def beat_while_judged(worker):
        # The slow process's heartbeat lands between the sweep's judgement and its loading the row.
        if worker == elsewhere:
            Run.objects.filter(pk=slow.pk).update(heartbeat_at=timezone.now())
        return None

    monkeypatch.setattr(recovery, "_process_alive", beat_while_judged)
    found = recovery.find_orphans()
    assert [run.pk for run in found] == [silent.pk]
    assert [recovery.claim(run) for run in found] == [True]
    assert Run.objects.get(pk=slow.pk).worker == elsewhere
