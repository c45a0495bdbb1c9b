"""Reading runs through the API under ASGI: who sees what, and what each read asks the database
(a session caller's own run: the session, the user and the run, nothing more)."""

from __future__ import annotations

import threading

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.db.backends.utils import CursorWrapper
from django.test import AsyncClient

from dashboard.forms import RunRequestForm
from dashboard.tokens import issue_token
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def reviewer(django_user_model):
    person = django_user_model.objects.create_user("rita", password="rita-pass-123")
    person.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    return person


@pytest.fixture
def queries(monkeypatch):
    """The SQL of every query run meanwhile, on any thread."""
    seen: list[str] = []
    execute = CursorWrapper.execute

    def counting(self, sql, params=None):
        seen.append(sql)
        return execute(self, sql, params)

    monkeypatch.setattr(CursorWrapper, "execute", counting)
    return seen


async def client_for(person) -> AsyncClient:
    client = AsyncClient()
    await sync_to_async(client.force_login)(person)
    return client


async def test_reading_ones_own_run_is_three_queries(user, queries):
    run = await sync_to_async(make_run)(user)
    client = await client_for(user)
    queries.clear()
    response = await client.get(f"/api/runs/{run.pk}/")
    assert response.status_code == 200 and response.json()["owner"] == "alice"
    tables = [sql.split(" FROM ", 1)[1].split()[0].strip('"') for sql in queries]
    assert tables == ["django_session", "auth_user", "streams_run"], queries


async def test_reading_ones_own_runs_events_is_four_queries(user, queries):
    run = await sync_to_async(make_run)(user, events=3)
    client = await client_for(user)
    queries.clear()
    response = await client.get(f"/api/runs/{run.pk}/events/?after=0")
    assert [event["seq"] for event in response.json()["events"]] == [1, 2]
    tables = [sql.split(" FROM ", 1)[1].split()[0].strip('"') for sql in queries]
    assert tables == ["django_session", "auth_user", "streams_run", "streams_event"], queries


async def test_listing_ones_own_runs_asks_no_role(user, other_user, queries):
    await sync_to_async(make_run)(user)
    await sync_to_async(make_run)(other_user)
    client = await client_for(user)
    queries.clear()
    response = await client.get("/api/runs/")
    assert [item["owner"] for item in response.json()["runs"]] == ["alice"]
    assert not any("auth_group" in sql for sql in queries), queries
    runs_query = next(sql for sql in queries if 'FROM "streams_run"' in sql)
    assert '"streams_run"."metrics"' not in runs_query and '"streams_run"."usage"' not in runs_query
    assert len(queries) == 3, queries  # session, user, runs: nothing read run by run


async def test_who_sees_whose_run(user, other_user, staff_user, reviewer):
    theirs = await sync_to_async(make_run)(other_user)
    for person, status in ((user, 404), (staff_user, 200), (reviewer, 200), (other_user, 200)):
        response = await (await client_for(person)).get(f"/api/runs/{theirs.pk}/")
        assert response.status_code == status, person.username
    assert (await (await client_for(user)).get("/api/runs/999999/")).status_code == 404


async def test_everyones_runs_only_for_those_who_may_see_them(user, other_user, reviewer):
    await sync_to_async(make_run)(user)
    await sync_to_async(make_run)(other_user)
    mine = (await (await client_for(user)).get("/api/runs/?all=1")).json()["runs"]
    assert [item["owner"] for item in mine] == ["alice"]
    everyone = (await (await client_for(reviewer)).get("/api/runs/?all=1")).json()["runs"]
    assert sorted(item["owner"] for item in everyone) == ["alice", "bob"]


async def test_a_token_reads_its_owners_runs_without_a_session(user, other_user):
    mine, theirs = await sync_to_async(make_run)(user), await sync_to_async(make_run)(other_user)
    _token, secret = await sync_to_async(issue_token)(user)
    client, bearer = AsyncClient(), {"Authorization": f"Bearer {secret}"}
    assert (await client.get(f"/api/runs/{mine.pk}/", headers=bearer)).status_code == 200
    assert (await client.get(f"/api/runs/{theirs.pk}/", headers=bearer)).status_code == 404
    assert [item["id"] for item in (await client.get("/api/runs/", headers=bearer)).json()["runs"]] == [mine.pk]


async def test_strangers_and_wrong_methods_get_json_errors(user):
    run = await sync_to_async(make_run)(user)
    stranger = AsyncClient()
    for url in ("/api/runs/", f"/api/runs/{run.pk}/"):
        response = await stranger.get(url)
        assert response.status_code == 401 and response.json()["error"]["code"] == "not_authenticated"
    member = await client_for(user)
    response = await member.put("/api/runs/")
    assert response.status_code == 405 and response.json()["error"]["code"] == "method_not_allowed"
    response = await member.delete(f"/api/runs/{run.pk}/")
    assert response.status_code == 405
    response = await AsyncClient().get("/api/runs/", headers={"Authorization": "Bearer ssk_nope"})
    assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_token"


async def test_a_new_runs_form_is_checked_on_the_event_loop(user, monkeypatch):
    """No I/O in RunRequestForm (the providers come from settings), so no hop to a thread for it; a
    database read added to it would fail loudly here (SynchronousOnlyOperation)."""
    threads = []
    is_valid = RunRequestForm.is_valid

    def recording(form):
        threads.append(threading.current_thread())
        return is_valid(form)

    monkeypatch.setattr(RunRequestForm, "is_valid", recording)
    client = await client_for(user)
    response = await client.post("/api/runs/", data={"model": "sim-text", "input": " "},
                                 content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["fields"] == {"input": ["the input is empty"]}
    assert threads == [threading.current_thread()]
