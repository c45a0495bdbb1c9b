"""The insights roll-up: its figures against the runs' own, and staying right as runs end, change, are
flagged, deleted or pruned, with or without a fold (streams/history/rollup.py)."""

import json
import random
from datetime import UTC, datetime, timedelta

import pytest
from django.contrib.auth.models import Group
from django.core.management import call_command
from django.test import RequestFactory
from django.utils import timezone

from dashboard.api.insights import _insights as answer_insights
from streams.history import rollup
from streams.history.retention import prune_events
from streams.models import REVIEWER_GROUP, Event, RollupMark, Run, RunFlag, RunRollup, RunStatus
from streams.protocol.metrics import percentile

pytestmark = pytest.mark.django_db

FIGURES = ("ttft_ms", "tokens_per_s", "duration_ms", "gap_p95_ms")
FRACTIONS = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
SINCE, UNTIL = NOW - timedelta(days=3), NOW + timedelta(hours=1)


def make_run(owner, model="m-a", provider="p", *, at, status=RunStatus.COMPLETED, ttft=200.0, **fields):
    figures = {"ttft_ms": ttft, "tokens_per_s": 40.0, "duration_ms": ttft * 9 if ttft else None, "gap_p95_ms": 30.0,
               **fields}
    run = Run.objects.create(owner=owner, provider=provider, model=model, status=status, request={"input": "x"},
                             **figures)
    Run.objects.filter(pk=run.pk).update(created_at=at)
    return run


def spread(owner, count=240, seed=7):
    """Runs over the last 3 days: three models of two providers, log-normal figures, every outcome, some
    figures unknown, a few flagged."""
    rng = random.Random(seed)
    statuses = [RunStatus.COMPLETED] * 12 + [RunStatus.FAILED, RunStatus.INCOMPLETE, RunStatus.CANCELLED,
                                              RunStatus.INTERRUPTED]
    runs = []
    for n in range(count):
        model, provider = rng.choice([("m-a", "p"), ("m-b", "p"), ("m-c", "q")])
        at = SINCE + timedelta(seconds=rng.uniform(0, 3 * 86400))
        run = make_run(owner, model, provider, at=at, status=rng.choice(statuses),
                       ttft=rng.lognormvariate(5.5, 0.6), tokens_per_s=rng.lognormvariate(3.5, 0.5),
                       duration_ms=rng.lognormvariate(8, 0.7),
                       gap_p95_ms=None if n % 5 == 0 else rng.lognormvariate(3, 0.4))
        if n % 11 == 0:
            RunFlag.objects.create(run=run, rule_name="r", scope="output_text")
        runs.append(run)
    return runs


def expected(runs, key):
    """Each group's figures from the runs themselves: counts, rates and nearest-rank percentiles."""
    groups = {}
    for run in runs:
        groups.setdefault(getattr(run, key), []).append(run)
    answer = {}
    for name, members in groups.items():
        entry = {"runs": len(members),
                 "failed_rate": round(sum(r.status == "failed" for r in members) / len(members), 4),
                 "interrupted_rate": round(sum(r.status == "interrupted" for r in members) / len(members), 4),
                 "flagged_rate": round(sum(r.flags.exists() for r in members) / len(members), 4)}
        for figure in FIGURES:
            values = sorted(getattr(r, figure) for r in members if getattr(r, figure) is not None)
            entry[figure] = {p: percentile(values, f) for p, f in FRACTIONS}
        answer[name] = entry
    return answer


def assert_matches(body, runs, key):
    want = expected([Run.objects.get(pk=r.pk) for r in runs], key)
    got = {g["key"]: g for g in body["groups"]}
    assert set(got) == set(want)
    for name, entry in want.items():
        for count in ("runs", "failed_rate", "interrupted_rate", "flagged_rate"):
            assert got[name][count] == entry[count], (name, count)
        for figure in FIGURES:
            for p, _ in FRACTIONS:
                exact, near = entry[figure][p], got[name][figure][p]
                assert (exact is None) == (near is None)
                if exact is not None:
                    assert abs(near - exact) <= rollup.RELATIVE_ERROR * exact + 1e-9, (name, figure, p, exact, near)


def ask(user, **params):
    """The API's answer, asked in this thread (the test's transaction: so this module runs on PostgreSQL too,
    ``STREAMSCOPE_DB_POOL_SIZE=0 DATABASE_URL=postgres://...``)."""
    query = {"since": SINCE.isoformat(), "until": UNTIL.isoformat(), **params}
    request = RequestFactory().get("/api/insights/", query)
    request.user = user
    return json.loads(answer_insights(request).content)


def test_bins_read_back_within_the_stated_error():
    for value in (0.0011, 0.5, 1.0, 3.3, 99.99, 100.0, 2048.7, 123456.0, 9.9e8):
        back = rollup.value_of(rollup.bin_of(value))
        assert abs(back - value) <= rollup.RELATIVE_ERROR * value + 1e-12, value
    assert rollup.value_of(rollup.bin_of(0.0)) == 0.0 and rollup.bin_of(-3.0) == 0
    assert rollup.RELATIVE_ERROR == 0.01


def test_histograms_merge_and_rank_like_the_values():
    rng = random.Random(3)
    values = [rng.lognormvariate(6, 1) for _ in range(500)]
    whole = rollup.Histogram.of(values)
    merged = rollup.Histogram()
    for part in (values[:100], values[100:101], values[101:]):
        merged.merge(rollup.Histogram.parse(rollup.Histogram.of(part).text()))
    assert merged.low == whole.low and merged.counts == whole.counts
    total, *near = merged.summary()
    assert total == 500
    for (_, fraction), got in zip(FRACTIONS, near, strict=True):
        exact = percentile(sorted(values), fraction)
        assert abs(got - exact) <= rollup.RELATIVE_ERROR * exact


@pytest.mark.parametrize("folded", [False, True])
@pytest.mark.parametrize(("group_by", "bucket"), [("model", "day"), ("provider", "hour")])
def test_staff_figures_from_the_roll_up_match_the_runs_own(staff_user, folded, group_by, bucket):
    runs = spread(staff_user)
    if folded:  # in small rounds, as a first fold over a long history goes
        assert rollup.fold(marks_per_round=50, hours_per_round=5) > 0
        assert not RollupMark.objects.exists() and RunRollup.objects.exists()
    body = ask(staff_user, group_by=group_by, bucket=bucket)
    assert body["rolled_up"] is True and body["percentiles_within"] == rollup.RELATIVE_ERROR
    assert_matches(body, runs, group_by)
    # The series adds up to the groups.
    for series in body["series"]:
        group = next(g for g in body["groups"] if g["key"] == series["key"])
        assert sum(p["runs"] for p in series["points"]) == group["runs"]


def test_a_range_cut_inside_hours_counts_the_edges_from_the_runs(staff_user):
    runs = spread(staff_user, count=120)
    rollup.fold()
    since, until = SINCE + timedelta(minutes=37), NOW - timedelta(minutes=21)
    inside = [r for r in Run.objects.all() if since <= r.created_at < until]
    body = ask(staff_user, since=since.isoformat(), until=until.isoformat(), group_by="model")
    assert body["rolled_up"] is True
    assert_matches(body, [r for r in runs if r.pk in {i.pk for i in inside}], "model")


def test_a_run_ending_after_a_fold_appears(staff_user):
    make_run(staff_user, at=NOW - timedelta(hours=5), ttft=100.0)
    rollup.fold()
    live = make_run(staff_user, at=NOW - timedelta(hours=5), status=RunStatus.STREAMING, ttft=None)
    assert not RollupMark.objects.exists()  # an active run is not in the roll-up...
    [group] = ask(staff_user)["groups"]
    assert group["runs"] == 2  # ...but counted directly
    Run.objects.filter(pk=live.pk).update(status=RunStatus.FAILED, ttft_ms=900.0, finished_at=timezone.now())
    for _ in ("before a fold", "after a fold"):
        [group] = ask(staff_user)["groups"]
        assert group["runs"] == 2 and group["failed_rate"] == 0.5
        assert group["ttft_ms"]["p99"] == pytest.approx(900.0, rel=rollup.RELATIVE_ERROR)
        rollup.fold()


def test_a_deleted_run_disappears(staff_user):
    keep = make_run(staff_user, at=NOW - timedelta(hours=30), ttft=100.0)
    gone = make_run(staff_user, at=NOW - timedelta(hours=30), ttft=5000.0)
    RunFlag.objects.create(run=gone, rule_name="r", scope="output_text")
    rollup.fold()
    assert ask(staff_user)["groups"][0]["runs"] == 2
    gone.delete()
    for _ in ("before a fold", "after a fold"):
        [group] = ask(staff_user)["groups"]
        assert group["runs"] == 1 and group["flagged_rate"] == 0
        assert group["ttft_ms"]["p99"] == pytest.approx(keep.ttft_ms, rel=rollup.RELATIVE_ERROR)
        rollup.fold()
    assert RunRollup.objects.filter(span="day", every_model=True).get().runs == 1


def test_a_late_flag_counts_and_an_unflagged_run_stops_counting(staff_user):
    run = make_run(staff_user, at=NOW - timedelta(hours=2))
    make_run(staff_user, at=NOW - timedelta(hours=2))
    rollup.fold()
    assert ask(staff_user)["groups"][0]["flagged_rate"] == 0
    flag = RunFlag.objects.create(run=run, rule_name="late", scope="output_text")
    assert ask(staff_user)["groups"][0]["flagged_rate"] == 0.5
    rollup.fold()
    assert ask(staff_user)["groups"][0]["flagged_rate"] == 0.5
    flag.delete()
    assert ask(staff_user)["groups"][0]["flagged_rate"] == 0
    rollup.fold()
    assert ask(staff_user)["groups"][0]["flagged_rate"] == 0


def test_pruning_events_changes_no_figure(staff_user):
    run = make_run(staff_user, at=NOW - timedelta(days=2), ttft=321.0)
    Run.objects.filter(pk=run.pk).update(finished_at=NOW - timedelta(days=2), event_count=1)
    Event.objects.create(run=run, seq=0, t=1.0, type="response.created", data="{}")
    rollup.fold()
    before = ask(staff_user)
    assert prune_events(timedelta(days=1)).runs == 1
    assert not RollupMark.objects.exists()
    after = ask(staff_user)
    assert after["groups"] == before["groups"] and after["groups"][0]["ttft_ms"]["p50"] == pytest.approx(321.0,
                                                                                                          rel=0.01)


def test_a_person_never_sees_others_runs(user, other_user, staff_user):
    mine = make_run(user, "shared", at=NOW - timedelta(hours=3), ttft=100.0)
    make_run(other_user, "shared", at=NOW - timedelta(hours=3), ttft=5000.0)
    make_run(other_user, "theirs", at=NOW - timedelta(hours=3), ttft=5000.0)
    rollup.fold()
    body = ask(user)
    assert body["rolled_up"] is False
    assert [(g["key"], g["runs"], g["ttft_ms"]["p99"]) for g in body["groups"]] == [("shared", 1, mine.ttft_ms)]
    assert {s["key"] for s in body["series"]} == {"shared"}
    assert {g["key"]: g["runs"] for g in ask(staff_user)["groups"]} == {"shared": 2, "theirs": 1}


def test_reviewers_see_every_run_and_read_the_roll_up(user, other_user):
    user.groups.add(Group.objects.get_or_create(name=REVIEWER_GROUP)[0])
    make_run(other_user, at=NOW - timedelta(hours=3))
    body = ask(user)
    assert body["rolled_up"] is True and body["groups"][0]["runs"] == 1


def test_filters_narrow_the_roll_up_and_source_takes_the_direct_query(staff_user):
    runs = spread(staff_user, count=90)
    rollup.fold()
    body = ask(staff_user, group_by="provider", model="m-b")
    assert body["rolled_up"] is True
    assert_matches(body, [r for r in runs if r.model == "m-b"], "provider")
    body = ask(staff_user, group_by="model", provider="p", bucket="hour")
    assert_matches(body, [r for r in runs if r.provider == "p"], "model")
    assert ask(staff_user, source="playground")["rolled_up"] is False


def test_the_command_folds(staff_user, capsys):
    make_run(staff_user, at=NOW - timedelta(hours=3))
    call_command("fold_insights")
    assert "recomputed" in capsys.readouterr().out and not RollupMark.objects.exists()
    assert RunRollup.objects.filter(span="hour", every_model=False).get().runs == 1
    RunRollup.objects.update(runs=7)  # damaged: a rebuild recomputes it from the runs
    call_command("fold_insights", "--rebuild")
    assert capsys.readouterr().out.startswith("marked 1 ")
    assert RunRollup.objects.filter(span="hour", every_model=False).get().runs == 1


def test_a_fold_between_a_reads_statements_starts_the_read_again(staff_user, monkeypatch):
    runs = spread(staff_user, count=60)
    rollup.fold()
    real = rollup._direct_runs
    refolds = []

    def refold_first(*args):
        if not refolds:  # the rows are chosen; a fold now writes them anew (new ids)
            refolds.append(rollup.mark_everything())
            rollup.fold()
        return real(*args)

    monkeypatch.setattr(rollup, "_direct_runs", refold_first)
    body = ask(staff_user, group_by="model", bucket="day")
    assert refolds and body["rolled_up"] is True
    assert_matches(body, runs, "model")


def test_a_fold_with_a_spent_budget_leaves_the_rest_for_the_next(staff_user):
    spread(staff_user, count=30)
    assert rollup.fold(budget_s=0) == 0 and RollupMark.objects.exists()
    assert rollup.fold_a_while() > 0 and not RollupMark.objects.exists()
