"""The admin: run list, filters, search, actions, the read-only run page, moderation rules."""

import io
import json
import re
import zipfile

import pytest
from django.contrib import admin
from django.test import Client

from streams.models import Event, ModerationRule, ReviewState, Run, RunFlag, RunStatus, Verdict
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def root(django_user_model):
    return django_user_model.objects.create_superuser("root", "", "root-pass-123")


@pytest.fixture
def admin_client_(root):
    client = Client()
    client.force_login(root)
    return client


def listed_ids(response):
    return sorted(int(i) for i in re.findall(r'name="_selected_action" value="(\d+)"', response.content.decode()))


def test_the_run_list_shows_the_columns_and_filters(admin_client_, user):
    run = make_run(user, metrics={"duration_ms": 1234.0}, usage={"output_tokens": 42})
    rule = ModerationRule.objects.create(name="r", patterns="x")
    RunFlag.objects.create(run=run, rule=rule, rule_name="r", scope="output_text")
    response = admin_client_.get("/admin/streams/run/")
    html = response.content.decode()
    assert response.status_code == 200
    for column in ("status", "provider", "model", "owner", "created at", "duration", "tokens", "review state", "flags"):
        assert f">{column.capitalize()}<" in html or f">{column}<" in html.lower(), column
    assert "1234 ms" in html and ">42<" in html
    for title in ("By status", "By review state", "By flags", "By flagged by rule", "By duration", "By output tokens"):
        assert title in html


def test_filters_and_search(admin_client_, user, other_user):
    # Durations filter on the indexed column the run's end fills from its metrics (docs/metrics.md).
    quick = make_run(user, metrics={"duration_ms": 500.0}, duration_ms=500.0, usage={"output_tokens": 10},
                     output_text="the zebra ran")
    slow = make_run(other_user, metrics={"duration_ms": 20_000.0}, duration_ms=20_000.0, usage={"output_tokens": 5000})
    Run.objects.filter(pk=slow.pk).update(request={"model": "sim-text", "input": "tell me about giraffes"})
    failed = make_run(user, status=RunStatus.FAILED)
    rule = ModerationRule.objects.create(name="zebras", patterns="zebra")
    RunFlag.objects.create(run=quick, rule=rule, rule_name="zebras", scope="output_text")
    Run.objects.filter(pk=quick.pk).update(review_state=ReviewState.FLAGGED)
    get = lambda **q: listed_ids(admin_client_.get("/admin/streams/run/", q))  # noqa: E731
    assert get(status__exact="failed") == [failed.pk]
    assert get(review_state__exact="flagged") == [quick.pk]
    assert get(flagged="yes") == [quick.pk]
    assert get(flagged="no") == sorted([slow.pk, failed.pk])
    assert get(rule=str(rule.pk)) == [quick.pk]
    assert get(duration="lt1") == [quick.pk] and get(duration="10to60") == [slow.pk]
    assert get(tokens="gt1k") == [slow.pk]
    assert get(owner__id__exact=str(other_user.pk)) == [slow.pk]
    assert get(q="zebra") == [quick.pk]  # output text
    assert get(q="giraffes") == [slow.pk]  # input


def test_verdict_actions_record_history(admin_client_, root, user):
    runs = [make_run(user) for _ in range(3)]
    for action, expected in (("approve_selected", "approved"), ("flag_selected", "flagged"),
                             ("reject_selected", "rejected")):
        response = admin_client_.post("/admin/streams/run/",
                                      {"action": action, "_selected_action": [runs[0].pk, runs[1].pk]})
        assert response.status_code == 302
        assert set(Run.objects.filter(pk__in=[runs[0].pk, runs[1].pk])
                   .values_list("review_state", flat=True)) == {expected}
    assert Verdict.objects.filter(run=runs[0]).count() == 3  # history kept, never overwritten
    assert Verdict.objects.filter(reviewer=root).count() == 6
    assert Run.objects.get(pk=runs[2].pk).review_state == ReviewState.UNREVIEWED


def test_export_action_gives_a_zip_of_jsonl(admin_client_, user):
    first, second = make_run(user, events=3), make_run(user, events=2)
    response = admin_client_.post("/admin/streams/run/", {"action": "export_selected",
                                                          "_selected_action": [first.pk, second.pk]})
    assert response.status_code == 200 and response["Content-Type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    assert sorted(archive.namelist()) == [f"run-{first.pk}.jsonl", f"run-{second.pk}.jsonl"]
    lines = archive.read(f"run-{first.pk}.jsonl").decode().splitlines()
    assert json.loads(lines[0])["streamscope"] == 1 and [json.loads(line)["seq"] for line in lines[1:]] == [0, 1, 2]


def test_the_run_page_is_read_only_with_output_and_events_page_by_page(admin_client_, user):
    run = make_run(user, events=0)
    Event.objects.bulk_create(
        Event(run=run, seq=seq, t=float(seq), type="response.output_text.delta",
              data=json.dumps({"type": "response.output_text.delta", "output_index": 0, "content_index": 0,
                               "delta": f"w{seq} ", "sequence_number": seq}))
        for seq in range(250)
    )
    RunFlag.objects.create(run=run, rule_name="w1 rule", scope="output_text", seq=150, matched_text="w150",
                           context_before="w149 ", start=10, end=14)
    url = f"/admin/streams/run/{run.pk}/change/"
    html = admin_client_.get(url).content.decode()
    assert "Request JSON" in html and "Rebuilt output" in html
    assert "w0 w1 w2" in html  # the output rebuilt from the deltas
    assert "page 1 of 3 (250 events)" in html
    assert len(re.findall(r'<tr id="event-\d+">', html)) == 100
    assert 'name="_save"' not in html  # nothing to save: the run is read-only
    assert 'href="?events_page=2#event-150"' in html and "<mark>w150</mark>" in html
    page3 = admin_client_.get(url, {"events_page": "3"}).content.decode()
    rows = [int(s) for s in re.findall(r'<tr id="event-(\d+)">', page3)]
    assert rows == list(range(200, 250))
    before = Run.objects.get(pk=run.pk).output_text
    assert admin_client_.post(url, {"output_text": "edited"}).status_code == 403
    assert Run.objects.get(pk=run.pk).output_text == before


def test_events_and_runs_cannot_be_added_changed_or_deleted(admin_client_, user):
    run = make_run(user, events=2)
    assert not admin.site.is_registered(Event)
    assert admin_client_.get("/admin/streams/event/").status_code == 404
    assert admin_client_.get("/admin/streams/run/add/").status_code == 403
    assert admin_client_.post(f"/admin/streams/run/{run.pk}/delete/", {"post": "yes"}).status_code == 403
    html = admin_client_.get("/admin/streams/run/").content.decode()
    assert 'value="delete_selected"' not in html
    assert Event.objects.filter(run=run).count() == 2


def test_who_may_use_the_admin(user, staff_user):
    client = Client()
    assert client.get("/admin/streams/run/")["Location"] == "/accounts/login/?next=/admin/streams/run/"
    client.force_login(user)
    assert client.get("/admin/streams/run/")["Location"].startswith("/admin/login/")
    client.force_login(staff_user)  # staff, but no model permissions
    assert client.get("/admin/streams/run/").status_code == 403


# --- moderation rules ---------------------------------------------------------------------------------

def rule_form(**fields):
    return {"name": "r", "enabled": "on", "kind": "regex", "patterns": "x+", "scope": "output_text",
            "action": "flag", "whole_words": "on", **fields}


def test_a_bad_regex_is_refused_with_a_clear_message(admin_client_):
    response = admin_client_.post("/admin/streams/moderationrule/add/", rule_form(patterns="(a+)+b"))
    assert response.status_code == 200
    assert "could take exponential time" in response.content.decode()
    response = admin_client_.post("/admin/streams/moderationrule/add/", rule_form(patterns="sec(ret"))
    assert "not a valid regular expression: missing ), unterminated subpattern at position 3" \
        in response.content.decode()
    assert not ModerationRule.objects.exists()
    response = admin_client_.post("/admin/streams/moderationrule/add/", rule_form(patterns=r"sk-[A-Za-z0-9]{20,}"))
    assert response.status_code == 302
    assert ModerationRule.objects.get().patterns == r"sk-[A-Za-z0-9]{20,}"


def test_the_rule_form_has_a_test_box_without_inline_script(admin_client_):
    html = admin_client_.get("/admin/streams/moderationrule/add/").content.decode()
    assert "data-rule-test" in html and "js/pages/rule_test.js" in html
    assert "Test this rule" in html


def test_the_test_endpoint_shows_what_a_rule_matches(admin_client_):
    answer = admin_client_.post("/admin/streams/moderationrule/test/",
                                {"kind": "keywords", "patterns": "kill\nsecret plan", "whole_words": "on",
                                 "sample": "A skill. They kill the SECRET plan."},
                                headers={"Accept": "application/json"}).json()
    assert answer["error"] is None
    assert [(m["start"], m["text"]) for m in answer["matches"]] == [(14, "kill"), (23, "SECRET plan")]
    bad = admin_client_.post("/admin/streams/moderationrule/test/",
                             {"kind": "regex", "patterns": "(x*)*", "sample": "x"},
                             headers={"Accept": "application/json"})
    assert bad.status_code == 400 and "match empty text" in bad.json()["error"]


def test_the_test_page_works_without_javascript(admin_client_):
    html = admin_client_.post("/admin/streams/moderationrule/test/",
                              {"kind": "regex", "patterns": r"\d{3}", "sample": "call 555 <now>"}).content.decode()
    assert "1 match" in html and "call <mark>555</mark> &lt;now&gt;" in html


def test_flag_and_verdict_history_is_read_only(admin_client_, user):
    run = make_run(user)
    flag = RunFlag.objects.create(run=run, rule_name="r", scope="output_text")
    assert admin_client_.get("/admin/streams/runflag/").status_code == 200
    assert admin_client_.post(f"/admin/streams/runflag/{flag.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client_.get("/admin/streams/verdict/add/").status_code == 403
