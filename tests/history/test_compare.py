"""Comparing runs: the figures (streams/history/compare.py), /api/compare/ and the /compare/ page."""

import json

import pytest

from streams.history.compare import (
    BadCompareRequest,
    cumulative_tokens,
    delta_to_first,
    figures_from_events,
    parse_run_ids,
    word_diff,
)
from streams.models import Event, Run, RunGroup, RunGroupMember
from tests.support.factories import make_run


def delta(t, text="x"):
    return (t, "response.output_text.delta", json.dumps({"type": "response.output_text.delta", "delta": text}))


def completed(t, output_tokens):
    response = {"status": "completed", "usage": {"output_tokens": output_tokens}}
    return (t, "response.completed", json.dumps({"type": "response.completed", "response": response}))


CREATED = (2.0, "response.created", '{"type":"response.created","response":{}}')


def test_gap_percentiles_are_nearest_rank_over_gaps_between_token_deltas():
    # Deltas at 10, 11, 13, 16, 20, 30 ms: gaps 1, 2, 3, 4, 10.
    rows = [CREATED] + [delta(t) for t in (10, 11, 13, 16, 20, 30)] + [completed(31, 6)]
    figures = figures_from_events(rows)
    m = figures.metrics
    assert (m["gap_p50_ms"], m["gap_p95_ms"], m["gap_max_ms"]) == (3.0, 10.0, 10.0)
    assert m["ttfe_ms"] == 2.0 and m["ttft_ms"] == 10.0 and m["duration_ms"] == 31.0
    assert m["events"] == 8 and m["output_tokens"] == 6 and m["output_tokens_estimated"] is False
    assert m["tokens_per_s"] == round(6 / 0.020, 2)
    assert figures.token_times == [10, 11, 13, 16, 20, 30]


def test_figures_of_a_run_with_no_deltas():
    m = figures_from_events([CREATED]).metrics
    assert m["ttft_ms"] is None and m["gap_p50_ms"] is None and m["tokens_per_s"] is None and m["output_tokens"] == 0


def test_cumulative_tokens_start_at_zero_and_end_at_the_reported_usage():
    assert cumulative_tokens([]) == [[0.0, 0.0]]
    assert cumulative_tokens([10.0, 20.0]) == [[0.0, 0.0], [10.0, 0.0], [10.0, 1.0], [20.0, 2.0]]
    # Four deltas but the run reported 8 output tokens: each delta counts for two.
    assert cumulative_tokens([1.0, 2.0, 3.0, 4.0], usage_tokens=8)[-1] == [4.0, 8.0]


def test_cumulative_tokens_are_thinned_but_keep_the_last_point():
    times = [float(i) for i in range(10_000)]
    points = cumulative_tokens(times, max_points=100)
    assert len(points) <= 100
    assert points[-1] == [9999.0, 10000.0]
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    assert xs == sorted(xs) and ys == sorted(ys)


def test_delta_to_first():
    assert delta_to_first([100, 150, None, 80.5]) == [None, 50, None, -19.5]
    assert delta_to_first([None, 3]) == [None, None]


def test_word_diff_marks_words_added_and_removed():
    diff = word_diff("the quick brown fox", "the slow brown fox jumps")
    assert diff["ops"] == [["equal", "the "], ["delete", "quick"], ["insert", "slow"], ["equal", " brown fox"],
                           ["insert", " jumps"]]
    assert 0 < diff["similarity"] < 1 and diff["unit"] == "word"
    same = word_diff("same text", "same text")
    assert same["ops"] == [["equal", "same text"]] and same["similarity"] == 1.0
    # Rebuilding either side from the ops gives the texts back.
    old = "".join(t for op, t in diff["ops"] if op != "insert")
    new = "".join(t for op, t in diff["ops"] if op != "delete")
    assert (old, new) == ("the quick brown fox", "the slow brown fox jumps")


@pytest.mark.parametrize(("values", "ids"), [(["1,2"], [1, 2]), (["3", "1,3", "2"], [3, 1, 2]), (["7, 8 ,"], [7, 8])])
def test_parse_run_ids(values, ids):
    assert parse_run_ids(values) == ids


@pytest.mark.parametrize(("values", "message"), [([], "name the runs"), (["1,2,3,4,5"], "at most 4"),
                                                 (["1,x"], "whole number"), (["0"], "whole number"),
                                                 (["\u00b2"], "whole number"),
                                                 (["99999999999999999999"], "whole number")])
def test_parse_run_ids_refuses(values, message):
    with pytest.raises(BadCompareRequest, match=message):
        parse_run_ids(values)


# --- the endpoint -------------------------------------------------------------------------------------
@pytest.fixture
def two_runs(user):
    first = make_run(user, events=5, output_text="alpha beta gamma")
    second = make_run(user, events=8, output_text="alpha delta gamma")
    return first, second


@pytest.mark.django_db
def test_compare_endpoint_returns_figures_series_counts_and_diff(client, user, two_runs):
    first, second = two_runs
    client.force_login(user)
    response = client.get(f"/api/compare/?runs={first.pk},{second.pk}")
    assert response.status_code == 200
    data = response.json()
    assert [r["id"] for r in data["runs"]] == [first.pk, second.pk]
    a, b = data["runs"]
    assert a["metrics"]["events"] == 5 and b["metrics"]["events"] == 8
    assert a["difference"]["events"] is None and b["difference"]["events"] == 3
    assert b["difference"]["duration_ms"] == 3.0  # the factory's events are 1 ms apart
    assert a["counts"] == {"response.output_text.delta": 5}
    assert a["cumulative_tokens"][-1] == [4.0, 5.0]
    assert data["event_types"] == ["response.output_text.delta"]
    assert data["diffs"] == [{"base": first.pk, "other": second.pk, "ops": [["equal", "alpha "], ["delete", "beta"],
                              ["insert", "delta"], ["equal", " gamma"]], "similarity": 0.8, "unit": "word"}]
    assert a["url"] == f"/runs/{first.pk}/" and a["replay_url"] == f"/runs/{first.pk}/replay/"


@pytest.mark.django_db
def test_compare_endpoint_enforces_ownership(client, user, other_user, staff_user, two_runs):
    first, _ = two_runs
    theirs = make_run(other_user, events=2)
    client.force_login(user)
    response = client.get(f"/api/compare/?runs={first.pk},{theirs.pk}")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert client.get(f"/api/compare/?runs={first.pk},999999").status_code == 404
    # Staff may compare anyone's runs.
    client.force_login(staff_user)
    assert client.get(f"/api/compare/?runs={first.pk},{theirs.pk}").status_code == 200


@pytest.mark.django_db
def test_compare_endpoint_errors(client, user, two_runs):
    assert client.get("/api/compare/?runs=1,2").status_code == 401
    client.force_login(user)
    for query, status in [("", 400), ("?runs=a,b", 400), ("?runs=1,2,3,4,5", 400), ("?group=x", 400),
                          ("?group=99999", 404)]:
        response = client.get(f"/api/compare/{query}")
        assert response.status_code == status, query
        assert "error" in response.json()
    assert client.post("/api/compare/?runs=1").status_code == 405


@pytest.mark.django_db
def test_compare_by_group_keeps_the_group_order_and_labels(client, user, other_user, two_runs):
    first, second = two_runs
    group = RunGroup.objects.create(owner=user, input="hi")
    RunGroupMember.objects.create(group=group, run=second, position=0, label="sim-text · t=0.2")
    RunGroupMember.objects.create(group=group, run=first, position=1, label="sim-text · t=1.2")
    client.force_login(user)
    data = client.get(f"/api/compare/?group={group.pk}").json()
    assert [(r["id"], r["label"]) for r in data["runs"]] == [(second.pk, "sim-text · t=0.2"),
                                                             (first.pk, "sim-text · t=1.2")]
    client.force_login(other_user)
    assert client.get(f"/api/compare/?group={group.pk}").status_code == 404


@pytest.mark.django_db
def test_compare_of_a_run_still_streaming_uses_what_it_has_sent(client, user):
    run = make_run(user, status="streaming", events=3)
    client.force_login(user)
    entry = client.get(f"/api/compare/?runs={run.pk}").json()["runs"][0]
    assert entry["status"] == "streaming" and entry["metrics"]["events"] == 3
    assert entry["metrics"]["output_tokens_estimated"] is True


@pytest.mark.django_db
def test_a_finished_run_keeps_its_own_stored_figures(client, user):
    run = make_run(user, events=4, metrics={"duration_ms": 999.5, "ttft_ms": 1.0, "events": 4, "gap_p95_ms": None})
    client.force_login(user)
    m = client.get(f"/api/compare/?runs={run.pk}").json()["runs"][0]["metrics"]
    assert m["duration_ms"] == 999.5  # the runner's own figure (to the end of the stream)
    assert m["ttft_ms"] == 1.0 and m["gap_p95_ms"] == 1.0  # missing stored figures are computed


@pytest.mark.django_db
def test_untimed_runs_have_no_series(client, user):
    run = make_run(user, events=3, metrics={"timed": False})
    Event.objects.filter(run=run).update(t=0.0)
    client.force_login(user)
    entry = client.get(f"/api/compare/?runs={run.pk}").json()["runs"][0]
    assert entry["timed"] is False and entry["cumulative_tokens"] == []
    assert entry["metrics"]["ttft_ms"] is None and entry["metrics"]["gap_p50_ms"] is None
    assert entry["metrics"]["events"] == 3


# --- the page -------------------------------------------------------------------------------------------
@pytest.mark.django_db
def test_compare_page(client, user, other_user, two_runs):
    first, second = two_runs
    client.force_login(user)
    page = client.get(f"/compare/?runs={first.pk}&runs={second.pk}")
    assert page.status_code == 200
    html = page.content.decode()
    assert 'id="compare-data"' in html and f'data-run-id="{first.pk}"' in html and "js/pages/compare.js" in html
    assert "<script>" not in html and "style=" not in html
    assert client.get("/compare/").status_code == 200  # the picker
    assert client.get("/compare/?runs=1,2,3,4,5").status_code == 400
    theirs = make_run(other_user)
    assert client.get(f"/compare/?runs={first.pk},{theirs.pk}").status_code == 404
    client.logout()
    assert client.get(f"/compare/?runs={first.pk}").status_code == 302  # to the login page


@pytest.mark.django_db
def test_run_list_offers_compare_checkboxes_and_group_links(client, user, two_runs):
    first, second = two_runs
    group = RunGroup.objects.create(owner=user, input="hello")
    RunGroupMember.objects.create(group=group, run=first, position=0, label="a")
    client.force_login(user)
    html = client.get("/runs/").content.decode()
    assert f'name="runs" value="{first.pk}"' in html and "Compare selected" in html
    assert f"/compare/?group={group.pk}" in html
    assert Run.objects.count() == 2
