"""Event retention: prune_events deletes old runs' events in batches, keeps runs, honours pins."""

from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.test import Client
from django.utils import timezone

from streams.history.retention import parse_span, prune_events
from streams.live import recovery
from streams.models import Event, Run, RunFlag, RunStatus, Verdict
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db


def aged(run, days):
    when = timezone.now() - timedelta(days=days)
    Run.objects.filter(pk=run.pk).update(created_at=when, finished_at=when)
    return run


def test_old_runs_lose_their_events_and_keep_everything_else(user):
    old = aged(make_run(user, events=12, output_text="kept", metrics={"ttft_ms": 5.0}, ttft_ms=5.0), 40)
    RunFlag.objects.create(run=old, rule_name="r", scope="output_text")
    Verdict.objects.create(run=old, reviewer=user, verdict="approved")
    recent = aged(make_run(user, events=3), 5)
    pinned = aged(make_run(user, events=4, pinned=True), 40)
    active = aged(make_run(user, status=RunStatus.STREAMING, events=2), 40)
    result = prune_events(timedelta(days=30), batch_events=5)  # 12 events: three DELETE statements
    assert (result.runs, result.events) == (1, 12)
    old.refresh_from_db()
    assert old.events_pruned_at is not None and not Event.objects.filter(run=old).exists()
    assert old.output_text == "kept" and old.metrics == {"ttft_ms": 5.0} and old.ttft_ms == 5.0
    assert old.event_count == 12 and old.flags.count() == 1 and old.verdicts.count() == 1
    for run, count in ((recent, 3), (pinned, 4), (active, 2)):
        assert Event.objects.filter(run=run).count() == count
        run.refresh_from_db()
        assert run.events_pruned_at is None
    assert prune_events(timedelta(days=30)).runs == 0  # nothing left to do


def test_dry_run_counts_and_deletes_nothing(user):
    aged(make_run(user, events=7), 40)
    result = prune_events(timedelta(days=30), dry_run=True)
    assert (result.runs, result.events, result.dry_run) == (1, 7, True)
    assert Event.objects.count() == 7 and not Run.objects.filter(events_pruned_at__isnull=False).exists()


def test_the_command(user, capsys):
    aged(make_run(user, events=3), 40)
    call_command("prune_events", "--older-than", "30d", "--dry-run")
    assert "would delete 3 events of 1 runs" in capsys.readouterr().out
    call_command("prune_events", "--older-than", "30d")
    assert "deleted 3 events of 1 runs" in capsys.readouterr().out
    with pytest.raises(CommandError):
        call_command("prune_events", "--older-than", "soon")
    assert parse_span("12h") == timedelta(hours=12) and parse_span("7") == timedelta(days=7)


def test_pruned_runs_say_so_and_refuse_replay_and_export(user):
    run = aged(make_run(user, events=3), 40)
    prune_events(timedelta(days=30))
    client = Client()
    client.force_login(user)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "data-events-pruned" in page and "cannot be replayed or exported" in page
    assert "data-events-pruned" in client.get(f"/runs/{run.pk}/replay/").content.decode()
    for fmt in ("sse", "jsonl"):
        answer = client.get(f"/runs/{run.pk}/export.{fmt}")
        assert answer.status_code == 410 and b"retention" in answer.content
    answer = client.post(f"/replay/{run.pk}/v1/responses", '{"stream": true}', content_type="application/json")
    assert answer.status_code == 410 and answer.json()["error"]["code"] == "events_pruned"
    assert client.get("/api/runs/?pruned=1").json()["runs"][0]["events_pruned_at"]


def test_pinning_from_the_run_page_keeps_events(user, other_user):
    run = aged(make_run(user, events=3), 40)
    client = Client()
    client.force_login(user)
    assert client.post(f"/runs/{run.pk}/pin/", {"pinned": "1"}).status_code == 302
    prune_events(timedelta(days=30))
    assert Event.objects.filter(run=run).count() == 3
    other = Client()
    other.force_login(other_user)
    assert other.post(f"/runs/{run.pk}/pin/", {"pinned": "0"}).status_code == 404
    assert Run.objects.get(pk=run.pk).pinned


async def test_housekeeping_prunes_at_most_once_an_interval(settings, monkeypatch):
    calls = []
    monkeypatch.setattr(recovery.retention, "prune_events", lambda span: calls.append(span) or
                        type("R", (), {"runs": 0, "events": 0})())
    settings.STREAMSCOPE_EVENT_RETENTION_DAYS = None
    assert await recovery.prune_if_due(None) is None and calls == []
    settings.STREAMSCOPE_EVENT_RETENTION_DAYS = 30
    settings.STREAMSCOPE_PRUNE_INTERVAL_S = 3600
    last = await recovery.prune_if_due(None)
    assert calls == [timedelta(days=30)]
    assert await recovery.prune_if_due(last) == last and len(calls) == 1
