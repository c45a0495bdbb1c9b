"""Insights: GET /api/insights/ figures against the runs' own metrics, rates, series, links, access."""

from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import pytest
from django.test import Client
from django.utils import timezone

from streams.history import insights as module
from streams.models import Run, RunFlag, RunStatus
from streams.protocol.metrics import compute_metrics, percentile

pytestmark = pytest.mark.django_db


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def recorded(owner, model, ttft, tps, status=RunStatus.COMPLETED, **fields):
    """A run whose columns come from metrics computed the way the recorder computes them."""
    events = [(5.0, "response.created", {}, 1), (ttft, "response.output_text.delta", {}, 1),
              (ttft + 1000.0, "response.output_text.delta", {}, 1),
              (ttft + 1000.0, "response.completed", {"response": {"usage": {"output_tokens": int(tps)}}}, 1)]
    metrics = compute_metrics(events)
    return Run.objects.create(owner=owner, provider="p", model=model, status=status, request={"input": "x"},
                              metrics=metrics, ttft_ms=metrics["ttft_ms"], tokens_per_s=metrics["tokens_per_s"],
                              duration_ms=metrics["duration_ms"], gap_p95_ms=metrics["gap_p95_ms"], **fields)


def test_group_figures_match_the_runs_own_metrics(user):
    runs = [recorded(user, "m-a", ttft, tps) for ttft, tps in
            [(100.0, 20), (300.0, 40), (200.0, 30), (900.0, 10), (150.0, 25)]]
    recorded(user, "m-a", 50.0, 5, status=RunStatus.FAILED)
    recorded(user, "m-b", 400.0, 50, status=RunStatus.CANCELLED)
    RunFlag.objects.create(run=runs[0], rule_name="r", scope="output_text")
    body = client_for(user).get("/api/insights/?group_by=model&since=1d").json()
    groups = {g["key"]: g for g in body["groups"]}
    assert [g["key"] for g in body["groups"]] == ["m-a", "m-b"]  # most runs first
    a = groups["m-a"]
    assert a["runs"] == 6
    mine = Run.objects.filter(model="m-a")
    ttfts = sorted(r.metrics["ttft_ms"] for r in mine)
    rates = sorted(r.metrics["tokens_per_s"] for r in mine)
    durations = sorted(r.metrics["duration_ms"] for r in mine)
    gaps = sorted(r.metrics["gap_p95_ms"] for r in mine)
    for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
        assert a["ttft_ms"][name] == percentile(ttfts, fraction)
        assert a["tokens_per_s"][name] == percentile(rates, fraction)
        assert a["duration_ms"][name] == percentile(durations, fraction)
        assert a["gap_p95_ms"][name] == percentile(gaps, fraction)
    assert a["ttft_ms"]["p50"] == 150.0 and a["ttft_ms"]["p99"] == 900.0
    assert a["failed_rate"] == round(1 / 6, 4) and a["flagged_rate"] == round(1 / 6, 4)
    assert a["cancelled_rate"] == 0 and groups["m-b"]["cancelled_rate"] == 1.0


def test_series_buckets_and_links_open_the_same_runs(user):
    old = recorded(user, "m", 100.0, 10)
    Run.objects.filter(pk=old.pk).update(created_at=timezone.now() - timedelta(days=2))
    new = recorded(user, "m", 300.0, 10)
    client = client_for(user)
    body = client.get("/api/insights/?since=3d&bucket=day").json()
    [series] = body["series"]
    assert series["key"] == "m" and [p["runs"] for p in series["points"]] == [1, 1]
    assert [p["ttft_ms"]["p50"] for p in series["points"]] == [100.0, 300.0]
    for point, run in zip(series["points"], (old, new)):
        url = urlsplit(point["runs_url"])
        assert url.path == "/runs/"
        listed = client.get("/api/runs/", dict(parse_qsl(url.query))).json()["runs"]
        assert [r["id"] for r in listed] == [run.pk]
        assert f"/runs/{run.pk}/" in client.get(point["runs_url"]).content.decode()
    group_url = urlsplit(body["groups"][0]["runs_url"])
    assert {r["id"] for r in client.get("/api/runs/", dict(parse_qsl(group_url.query))).json()["runs"]} == \
        {old.pk, new.pk}


def test_hourly_buckets_and_provider_grouping(user):
    recorded(user, "m", 100.0, 10)
    body = client_for(user).get("/api/insights/?group_by=provider&bucket=hour&since=6h").json()
    assert body["groups"][0]["key"] == "p" and len(body["series"][0]["points"]) == 1


def test_insights_never_count_others_runs(user, other_user, staff_user):
    recorded(user, "shared", 100.0, 10)
    recorded(other_user, "shared", 5000.0, 10)
    recorded(other_user, "theirs-only", 5000.0, 10)
    mine = client_for(user).get("/api/insights/").json()
    assert [(g["key"], g["runs"], g["ttft_ms"]["p99"]) for g in mine["groups"]] == [("shared", 1, 100.0)]
    assert all(s["key"] == "shared" for s in mine["series"])
    everyone = {g["key"]: g["runs"] for g in client_for(staff_user).get("/api/insights/").json()["groups"]}
    assert everyone == {"shared": 2, "theirs-only": 1}
    assert Client().get("/api/insights/").status_code == 401


@pytest.mark.parametrize(("query", "param"), [
    ("group_by=owner", "group_by"), ("bucket=week", "bucket"), ("since=soon", "since"), ("x=1", "x"),
    ("since=1d&until=2d", "since"), ("since=900d&bucket=hour", "bucket"), ("source=mars", "source"),
])
def test_bad_parameters_are_named(user, query, param):
    answer = client_for(user).get(f"/api/insights/?{query}")
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param


def test_the_page_renders(user):
    html = client_for(user).get("/insights/").content.decode()
    assert "data-insights-table" in html and "js/pages/insights.js" in html


def test_large_ranges_rank_a_sample_and_count_every_run(user, monkeypatch):
    monkeypatch.setattr(module, "SAMPLE_ABOVE", 4)
    monkeypatch.setattr(module, "SAMPLE_EVERY", 3)
    for ttft in (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0, 900.0):
        recorded(user, "m", ttft, 10)
    body = client_for(user).get("/api/insights/").json()
    every = body["percentiles_sampled_every"]
    assert every == 3
    [group] = body["groups"]
    assert group["runs"] == 9  # counts and rates: every run
    sample = sorted(r.ttft_ms for r in Run.objects.all() if r.pk % every == 0)
    assert group["ttft_ms"]["p50"] == percentile(sample, 0.5) and group["ttft_ms"]["p99"] == sample[-1]
