"""A viewer's opening (dashboard/consumers._opening) reads the run's row, its backlog's first page
and its flags with statements written out rather than built by the ORM: what it gives must be
what the ORM gives (JSON columns decoded, flags in the serializer's order, the page's bounds), on
SQLite and on PostgreSQL."""

from __future__ import annotations

import datetime
import textwrap

import pytest

from dashboard import consumers
from dashboard.serializers import flags_json
from streams.models import Event, RunFlag, RunStatus
from streams.pipeline import store
from streams.protocol.records import encode_record
from tests.support.factories import make_run
from tests.support.scaled import scaled_out_marks, script_on_new_deployment


def _orm_page(run_id, after, limit, upto=None):
    events = Event.objects.filter(run_id=run_id, seq__gt=after)
    if upto is not None:
        events = events.filter(seq__lte=upto)
    return [(seq, encode_record(seq, t, kind, data))
            for seq, t, kind, data in events.order_by("seq").values_list("seq", "t", "type", "data")[:limit]]


@pytest.mark.django_db
def test_the_opening_gives_what_the_orm_gives(user, other_user):
    run = make_run(user, status=RunStatus.FAILED, events=7, metrics={"ttft_ms": 12.5, "nested": {"a": [1]}},
                   error={"message": "boom \u00e9"}, event_count=7)
    same_time = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=datetime.UTC)
    for name, seq in (("late", 5), ("tie-b", 2), ("tie-a", 1), ("early", None)):
        flag = RunFlag.objects.create(run=run, rule_name=name, scope="output", seq=seq, matched_text=name)
        when = same_time - datetime.timedelta(hours=1) if name == "early" else same_time
        if name == "late":
            when += datetime.timedelta(seconds=1)
        RunFlag.objects.filter(pk=flag.pk).update(created_at=when)

    allowed, end, rows, flags = consumers._opening.func(run.pk, 2, user)
    assert allowed
    assert (end.status, end.metrics, end.error, end.event_count) == (
        "failed", {"ttft_ms": 12.5, "nested": {"a": [1]}}, {"message": "boom \u00e9"}, 7)
    assert rows == _orm_page(run.pk, 2, consumers.BACKLOG_PAGE) and [seq for seq, _ in rows] == [3, 4, 5, 6]
    assert flags == flags_json(run.pk)
    assert [flag["rule_name"] for flag in flags] == ["early", "tie-b", "tie-a", "late"]  # created_at, then id

    assert consumers._opening.func(run.pk, -1, other_user) == (False, None, [], [])
    assert consumers._opening.func(run.pk + 1000, -1, user) == (False, None, [], [])
    assert store.encoded_events_after(run.pk, 0, 3, upto=5) == _orm_page(run.pk, 0, 3, upto=5)
    assert store.encoded_events_after(run.pk, 1, 10, upto=4) == _orm_page(run.pk, 1, 10, upto=4)
    assert store.encoded_events_after(run.pk, 6, 10) == []


POSTGRES_SCRIPT = textwrap.dedent("""
    import json
    from django.contrib.auth.models import User
    from dashboard import consumers
    from dashboard.serializers import flags_json
    from streams.models import Event, Run, RunFlag
    from streams.pipeline import store

    owner = User.objects.get(username="alice")
    run = Run.objects.create(owner=owner, provider="simulator", model="m", status="completed",
                             metrics={"ttft_ms": 3}, error=None, event_count=5)
    Event.objects.bulk_create(Event(run=run, seq=seq, t=seq / 3, type="response.output_text.delta",
                                    data=json.dumps({"delta": f"w{seq} \\u00e9"})) for seq in range(5))
    for name in ("b", "a"):
        RunFlag.objects.create(run=run, rule_name=name, scope="output", matched_text=name)
    allowed, end, rows, flags = consumers._opening.func(run.pk, 0, owner)
    out = {"allowed": allowed, "end": [end.status, end.metrics, end.error, end.event_count], "rows": rows,
           "flags_equal": flags == flags_json(run.pk), "names": [flag["rule_name"] for flag in flags],
           "upto": store.encoded_events_after(run.pk, 0, 2, upto=3), "none": store.encoded_events_after(run.pk, 4, 9)}
    print("RESULT " + json.dumps(out))
""")


def test_the_opening_reads_the_same_on_postgresql(tmp_path):
    result = script_on_new_deployment(tmp_path, POSTGRES_SCRIPT)
    assert result["allowed"] and result["end"] == ["completed", {"ttft_ms": 3}, None, 5]
    assert [row[0] for row in result["rows"]] == [1, 2, 3, 4]
    assert result["rows"][0][1] == encode_record(1, 1 / 3, "response.output_text.delta", '{"delta": "w1 \\u00e9"}')
    assert result["flags_equal"] and result["names"] == ["b", "a"]
    assert [row[0] for row in result["upto"]] == [1, 2] and result["none"] == []


for _mark in scaled_out_marks():  # PostgreSQL's test only: a deployment of its own
    test_the_opening_reads_the_same_on_postgresql = _mark(test_the_opening_reads_the_same_on_postgresql)
