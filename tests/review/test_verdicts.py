"""The review queue: ordering and filters, verdict history, the derived state, the pages."""

import pytest
from django.contrib.auth.models import Group
from django.test import Client

from streams.models import ModerationRule, ReviewState, Run, RunFlag, RunStatus, Verdict
from streams.protocol.values import BadValue
from streams.review.verdicts import (
    QueueFilters,
    next_in_queue,
    queue_runs,
    record_verdict,
    refresh_review_state,
)
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db


@pytest.fixture
def reviewer(django_user_model):
    person = django_user_model.objects.create_user("rita", password="rita-pass-123")
    person.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    return person


def flag(run, rule=None, name="rule"):
    RunFlag.objects.create(run=run, rule=rule, rule_name=rule.name if rule else name, scope="output_text",
                           seq=1, matched_text="bad", start=0, end=3)
    refresh_review_state(run.pk)
    run.refresh_from_db()
    return run


def ids(runs):
    return [run.pk for run in runs]


# --- state and history ----------------------------------------------------------------------------

def test_every_verdict_is_kept_and_the_latest_decides(user, staff_user, reviewer):
    run = make_run(user)
    assert run.review_state == ReviewState.UNREVIEWED
    record_verdict(run, reviewer, "flagged", "odd tone")
    record_verdict(run, staff_user, "approved", "fine after all")
    run.refresh_from_db()
    assert run.review_state == ReviewState.APPROVED
    history = list(run.verdicts.order_by("created_at", "id").values_list("reviewer__username", "verdict", "note"))
    assert history == [("rita", "flagged", "odd tone"), ("carol", "approved", "fine after all")]


def test_a_rule_flag_makes_an_unreviewed_run_flagged_until_someone_decides(user, staff_user):
    run = flag(make_run(user))
    assert run.review_state == ReviewState.FLAGGED
    record_verdict(run, staff_user, "rejected")
    assert Run.objects.get(pk=run.pk).review_state == ReviewState.REJECTED


def test_unknown_verdicts_are_refused(user, staff_user):
    with pytest.raises(ValueError, match="unknown verdict"):
        record_verdict(make_run(user), staff_user, "maybe")


# --- the queue ------------------------------------------------------------------------------------

def test_queue_order_flagged_first_then_oldest_skipped_last(user, staff_user):
    old, middle, new = make_run(user), make_run(user), make_run(user)
    flagged = flag(make_run(user))
    make_run(user, status=RunStatus.STREAMING)  # not finished: not reviewable yet
    record_verdict(make_run(user), staff_user, "approved")  # decided: gone
    assert ids(queue_runs(staff_user)) == [flagged.pk, old.pk, middle.pk, new.pk]
    # Skipped runs go to the back, in the order they were skipped.
    assert ids(queue_runs(staff_user, skipped=[old.pk, flagged.pk])) == [middle.pk, new.pk, old.pk, flagged.pk]


def test_a_run_you_flagged_waits_for_another_reviewer(user, staff_user, reviewer):
    run = make_run(user)
    record_verdict(run, staff_user, "flagged")
    assert run.pk not in ids(queue_runs(staff_user))
    assert next_in_queue(reviewer).pk == run.pk


def test_queue_filters(user, staff_user):
    rule_a = ModerationRule.objects.create(name="a", patterns="x")
    rule_b = ModerationRule.objects.create(name="b", patterns="y")
    plain = make_run(user)
    by_a = flag(make_run(user), rule_a)
    other_model = make_run(user)
    Run.objects.filter(pk=other_model.pk).update(model="sim-reasoning-summary")
    by_b = flag(other_model, rule_b)
    assert ids(queue_runs(staff_user, QueueFilters(flagged_only=True))) == [by_a.pk, by_b.pk]
    assert ids(queue_runs(staff_user, QueueFilters(model="sim-text"))) == [by_a.pk, plain.pk]
    assert ids(queue_runs(staff_user, QueueFilters(rule_id=rule_b.pk))) == [by_b.pk]
    assert QueueFilters.from_query({"flagged": "1", "model": "m", "rule": "7"}) == QueueFilters(True, "m", 7)
    with pytest.raises(BadValue, match="rule"):  # a filter that is not an id is refused, not ignored
        QueueFilters.from_query({"rule": "drop table"})


# --- the pages ------------------------------------------------------------------------------------

def client_for(person):
    client = Client()
    client.force_login(person)
    return client


def test_non_reviewers_get_403_everywhere(user):
    run = make_run(user)
    client = client_for(user)
    assert client.get("/review/").status_code == 403
    assert client.post(f"/review/{run.pk}/verdict/", {"verdict": "approved"}).status_code == 403
    assert client.post(f"/review/{run.pk}/skip/").status_code == 403
    assert not Verdict.objects.exists()


def test_the_queue_page_shows_the_next_run_with_keys_and_verdicts_redirect_to_the_next(user, reviewer):
    first, second = make_run(user, output_text="first output"), make_run(user)
    client = client_for(reviewer)
    page = client.get("/review/")
    html = page.content.decode()
    assert page.status_code == 200
    assert f'data-run-id="{first.pk}"' in html and "2 waiting" in html
    assert 'data-key="a"' in html and "<kbd>A</kbd> approve" in html and 'id="run-data"' in html
    assert "<script>" not in html and "style=" not in html  # CSP: no inline scripts or styles
    response = client.post(f"/review/{first.pk}/verdict/", {"verdict": "rejected", "note": "made things up",
                                                            "flagged": "", "model": "sim-text"})
    assert response.status_code == 302 and response["Location"] == "/review/?model=sim-text"
    assert list(first.verdicts.values_list("verdict", "note", "reviewer")) == \
        [("rejected", "made things up", reviewer.pk)]
    assert f'data-run-id="{second.pk}"' in client.get("/review/").content.decode()


def test_skip_moves_a_run_to_the_back_for_this_reviewer_only(user, reviewer, staff_user):
    first, second = make_run(user), make_run(user)
    client = client_for(reviewer)
    assert client.post(f"/review/{first.pk}/skip/").status_code == 302
    assert f'data-run-id="{second.pk}"' in client.get("/review/").content.decode()
    assert f'data-run-id="{first.pk}"' in client_for(staff_user).get("/review/").content.decode()


def test_bad_verdicts_and_unknown_runs(user, reviewer):
    run = make_run(user)
    client = client_for(reviewer)
    assert client.post(f"/review/{run.pk}/verdict/", {"verdict": "meh"}).status_code == 400
    assert client.post("/review/999999/verdict/", {"verdict": "approved"}).status_code == 404
    assert client.get("/review/", {"run": "999999"}).status_code == 404
    assert client.get(f"/review/{run.pk}/verdict/").status_code == 405


def test_the_page_shows_flags_history_and_an_empty_queue(user, reviewer, staff_user):
    run = flag(make_run(user), name="no secrets")
    record_verdict(run, staff_user, "flagged", "needs a second look")
    html = client_for(reviewer).get("/review/").content.decode()
    assert "Flagged by no secrets" in html and "<mark>bad</mark>" in html and "needs a second look" in html
    record_verdict(run, reviewer, "approved")
    html = client_for(reviewer).get("/review/").content.decode()
    assert "data-review-empty" in html


def test_csrf_is_required_for_verdicts(user, reviewer):
    run = make_run(user)
    client = Client(enforce_csrf_checks=True)
    client.force_login(reviewer)
    assert client.post(f"/review/{run.pk}/verdict/", {"verdict": "approved"}).status_code == 403
    assert not Verdict.objects.exists()


def test_the_nav_links_to_the_queue_for_reviewers_only(user, reviewer):
    assert 'href="/review/"' in client_for(reviewer).get("/runs/").content.decode()
    assert 'href="/review/"' not in client_for(user).get("/runs/").content.decode()
