"""Finding runs: GET /api/runs/ filters, full-text search, sort, keyset cursors, 400s, and access."""

import base64
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import Group
from django.test import Client
from django.utils import timezone

from streams.models import REVIEWER_GROUP, Run, RunFlag, RunStatus

pytestmark = pytest.mark.django_db


def make(owner, text="hello", output="", **fields):
    return Run.objects.create(owner=owner, provider=fields.pop("provider", "simulator"),
                              model=fields.pop("model", "sim-text"), request={"input": text}, output_text=output,
                              **fields)


def client_for(user):
    client = Client()
    client.force_login(user)
    return client


def listed(client, query=""):
    answer = client.get(f"/api/runs/?{query}")
    assert answer.status_code == 200, answer.content
    return answer.json()


def ids(client, query=""):
    return [run["id"] for run in listed(client, query)["runs"]]


def walk(client, query):
    """Every page of a list, following ``next``."""
    seen, cursor, pages = [], None, 0
    while True:
        page = listed(client, query + (f"&cursor={cursor}" if cursor else ""))
        seen += [run["id"] for run in page["runs"]]
        pages += 1
        cursor = page["next"]
        if not cursor:
            return seen, pages


def test_filters_by_status_model_provider_source_review_state_and_dates(user):
    a = make(user, status=RunStatus.COMPLETED, model="gpt-a", provider="openai")
    b = make(user, status=RunStatus.FAILED, model="gpt-b", provider="openai", source="gateway")
    c = make(user, status=RunStatus.CANCELLED, model="gpt-a", provider="local", review_state="flagged")
    Run.objects.filter(pk=a.pk).update(created_at=timezone.now() - timedelta(days=3))
    client = client_for(user)
    assert ids(client, "status=failed") == [b.pk]
    assert set(ids(client, "status=failed,cancelled")) == {b.pk, c.pk}
    assert set(ids(client, "model=gpt-a")) == {a.pk, c.pk}
    assert ids(client, "provider=local") == [c.pk]
    assert ids(client, "source=gateway") == [b.pk]
    assert ids(client, "review_state=flagged") == [c.pk]
    assert set(ids(client, "since=2d")) == {b.pk, c.pk}
    assert ids(client, "until=2d") == [a.pk]
    day = (timezone.now() - timedelta(days=3)).date().isoformat()
    assert a.pk in ids(client, f"since={day}")


def test_filters_by_figures_and_flags(user):
    fast = make(user, ttft_ms=100.0, duration_ms=900.0)
    slow = make(user, ttft_ms=2500.0, duration_ms=4000.0)
    make(user)  # no figures
    RunFlag.objects.create(run=slow, rule_name="r", scope="output_text")
    client = client_for(user)
    assert ids(client, "ttft_ms_max=500") == [fast.pk]
    assert ids(client, "ttft_ms_min=1000&duration_ms_max=5000") == [slow.pk]
    assert ids(client, "flagged=1") == [slow.pk]
    assert slow.pk not in ids(client, "flagged=0")


def test_search_finds_words_in_input_and_output(user):
    sky = make(user, text="Why is the sky blue?", output="Rayleigh scattering of sunlight.")
    make(user, text="Write a haiku", output="Autumn moonlight")
    client = client_for(user)
    assert ids(client, "q=sky") == [sky.pk]
    assert ids(client, "q=rayleigh") == [sky.pk]  # output, any case
    assert ids(client, "q=sky+scattering") == [sky.pk]  # every word, across input and output
    assert ids(client, "q=sky+haiku") == []
    # Search characters from outside are words, not query syntax.
    for text in ('"', "NEAR(a b)", "a*", "-", "sky OR haiku", "input:sky", "'; drop table x"):
        assert client.get("/api/runs/", {"q": text}).status_code == 200


def test_search_follows_updates_and_deletes(user):
    run = make(user, text="first prompt")
    client = client_for(user)
    Run.objects.filter(pk=run.pk).update(output_text="zebra crossing")
    assert ids(client, "q=zebra") == [run.pk]
    Run.objects.filter(pk=run.pk).update(output_text="nothing")
    assert ids(client, "q=zebra") == []
    run.delete()
    assert ids(client, "q=first") == []


def test_summaries_carry_figures_not_bodies(user):
    make(user, text="x" * 5000, output="y" * 5000, ttft_ms=12.5)
    item = listed(client_for(user))["runs"][0]
    assert "request" not in item and "metrics" not in item and "output_text" not in item
    assert len(item["input"]) <= 200 and len(item["output"]) <= 200
    assert item["ttft_ms"] == 12.5 and item["url"].startswith("/runs/")


@pytest.mark.parametrize("sort", ["created_at", "-created_at", "ttft_ms", "-ttft_ms", "duration_ms",
                                  "-tokens_per_s", "event_count", "-event_count", "ttfb_ms"])
def test_cursor_pages_cover_every_run_once_with_ties_and_nulls(user, sort):
    now = timezone.now()
    made = []
    for i in range(23):
        run = make(user, ttft_ms=[100.0, 200.0, None][i % 3], duration_ms=float(i % 4 * 10),
                   tokens_per_s=None if i % 5 == 0 else 30.0, event_count=i % 2)
        made.append(run.pk)
    Run.objects.filter(pk__in=made[:10]).update(created_at=now)  # ten runs created at the same instant
    client = client_for(user)
    seen, pages = walk(client, f"sort={sort}&limit=4")
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))
    assert pages == 6
    # The pages join into the same order as one big page.
    assert seen == ids(client, f"sort={sort}&limit=100")
    field = sort.lstrip("-")
    values = [getattr(Run.objects.get(pk=pk), field) for pk in seen]
    present = [v for v in values if v is not None]
    assert present == sorted(present, reverse=sort.startswith("-"))
    assert values[len(present):] == [None] * (len(values) - len(present))  # nulls last either way


def test_cursor_is_opaque_and_checked(user):
    for _ in range(3):
        make(user)
    client = client_for(user)
    cursor = listed(client, "limit=1")["next"]
    assert cursor and "created_at" not in cursor
    assert client.get(f"/api/runs/?limit=1&sort=ttft_ms&cursor={cursor}").status_code == 400
    forged = base64.urlsafe_b64encode(json.dumps({"s": "-created_at", "v": 5, "id": 1}).encode()).decode()
    for bad in ("nonsense", "%%%", forged, "e30"):
        answer = client.get("/api/runs/", {"cursor": bad})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "cursor"


@pytest.mark.parametrize(("query", "param"), [
    ("colour=red", "colour"), ("status=done", "status"), ("sort=owner", "sort"), ("sort=--ttft_ms", "sort"),
    ("limit=0", "limit"), ("limit=²", "limit"), ("limit=100000", "limit"), ("since=yesterday", "since"),
    ("ttft_ms_max=-1", "ttft_ms_max"), ("source=elsewhere", "source"), ("review_state=x", "review_state"),
    ("flagged=maybe", "flagged"), ("page=0", "page"),
])
def test_bad_parameters_are_named(user, query, param):
    answer = client_for(user).get(f"/api/runs/?{query}")
    assert answer.status_code == 400
    body = answer.json()["error"]
    assert body["param"] == param and param.split("_max")[0] in body["message"]


def test_old_page_parameter_still_pages(user):
    for _ in range(3):
        make(user)
    body = listed(client_for(user), "page=1&limit=2")
    assert len(body["runs"]) == 2 and body["next_page"] == 2


def test_search_and_filters_never_reveal_others_runs(user, other_user, django_user_model):
    mine = make(user, text="secret plan", model="m1")
    theirs = make(other_user, text="secret plan", model="m1")
    client = client_for(user)
    for query in ("q=secret", "q=secret&all=1", "model=m1&all=1", f"owner={other_user.username}",
                  f"owner={other_user.username}&q=secret"):
        assert theirs.pk not in ids(client, query)
    assert ids(client, "q=secret&all=1") == [mine.pk]
    reviewer = django_user_model.objects.create_user("rev", password="pw")
    reviewer.groups.add(Group.objects.get_or_create(name=REVIEWER_GROUP)[0])
    rc = client_for(reviewer)
    assert ids(rc, f"owner={other_user.username}&q=secret") == [theirs.pk]
    assert set(ids(rc, "q=secret&all=1")) == {mine.pk, theirs.pk}
    assert Client().get("/api/runs/?q=secret").status_code == 401
