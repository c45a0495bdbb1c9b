"""Ownership and roles everywhere: pages, API and websocket.

A person sees and streams only their own runs; staff see all; members of the ``reviewer``
group see all (they judge other people's outputs) and use the review queue; anonymous visitors
are sent to log in (the API answers 401); the websocket refuses anyone who may not see the run.
"""

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import Client

from dashboard.asgi import application
from streams.models import RunStatus
from tests.support.factories import make_run


@pytest.fixture
def reviewer(django_user_model):
    person = django_user_model.objects.create_user("rita", password="rita-pass-123")
    person.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    return person


def client_for(person=None):
    client = Client()
    if person is not None:
        client.force_login(person)
    return client


# --- pages --------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_log_in_from_every_page(user):
    run = make_run(user)
    client = client_for()
    for url in ("/", "/runs/", f"/runs/{run.pk}/", "/review/", "/admin/", "/admin/streams/run/"):
        response = client.get(url)
        assert response.status_code == 302, url
        assert "login/" in response["Location"] and "next=" in response["Location"], url


@pytest.mark.django_db
def test_a_person_sees_only_their_own_runs_on_pages(user, other_user):
    mine, theirs = make_run(user), make_run(other_user)
    client = client_for(user)
    assert client.get(f"/runs/{mine.pk}/").status_code == 200
    assert client.get(f"/runs/{theirs.pk}/").status_code == 404  # the same answer as "no such run"
    assert client.get("/runs/999999/").status_code == 404
    listing = client.get("/runs/").content.decode()
    assert f"/runs/{mine.pk}/" in listing and f"/runs/{theirs.pk}/" not in listing
    # ?all=1 is for staff only: a person asking for it still sees only their own.
    assert f"/runs/{theirs.pk}/" not in client.get("/runs/?all=1").content.decode()
    assert client.get("/review/").status_code == 403
    assert client.get("/admin/")["Location"].startswith("/admin/login/")


@pytest.mark.django_db
def test_staff_see_every_run_on_pages(user, staff_user):
    theirs = make_run(user)
    client = client_for(staff_user)
    assert client.get(f"/runs/{theirs.pk}/").status_code == 200
    assert f"/runs/{theirs.pk}/" in client.get("/runs/?all=1").content.decode()
    assert client.get("/review/").status_code == 200


@pytest.mark.django_db
def test_reviewers_see_every_run_and_the_queue_but_not_the_admin(user, reviewer):
    theirs = make_run(user)
    client = client_for(reviewer)
    assert client.get(f"/runs/{theirs.pk}/").status_code == 200
    assert client.get("/review/").status_code == 200
    assert client.get("/admin/")["Location"].startswith("/admin/login/")


# --- API ----------------------------------------------------------------------------------------

@pytest.mark.django_db
def test_the_api_answers_401_to_anonymous_callers(user):
    run = make_run(user)
    client = client_for()
    for method, url in (("get", "/api/runs/"), ("get", f"/api/runs/{run.pk}/"),
                        ("get", f"/api/runs/{run.pk}/events/"), ("post", f"/api/runs/{run.pk}/cancel/")):
        response = getattr(client, method)(url)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.django_db
def test_the_api_shows_a_person_only_their_own_runs(user, other_user):
    mine, theirs = make_run(user, events=2), make_run(other_user, status=RunStatus.STREAMING, events=2)
    client = client_for(user)
    assert client.get(f"/api/runs/{mine.pk}/").status_code == 200
    assert len(client.get(f"/api/runs/{mine.pk}/events/").json()["events"]) == 2
    for method, url in (("get", f"/api/runs/{theirs.pk}/"), ("get", f"/api/runs/{theirs.pk}/events/"),
                        ("post", f"/api/runs/{theirs.pk}/cancel/")):
        response = getattr(client, method)(url)
        assert response.status_code == 404, url
        assert response.json()["error"]["code"] == "not_found"
    listed = [r["id"] for r in client.get("/api/runs/?all=1").json()["runs"]]
    assert listed == [mine.pk]
    theirs.refresh_from_db()
    assert theirs.status == RunStatus.STREAMING  # the stranger's cancel did nothing


@pytest.mark.django_db
def test_staff_and_reviewers_read_every_run_through_the_api(user, staff_user, reviewer):
    theirs = make_run(user, events=1)
    for person in (staff_user, reviewer):
        client = client_for(person)
        assert client.get(f"/api/runs/{theirs.pk}/").json()["owner"] == "alice"
        assert len(client.get(f"/api/runs/{theirs.pk}/events/").json()["events"]) == 1
    assert theirs.pk in [r["id"] for r in client_for(staff_user).get("/api/runs/?all=1").json()["runs"]]


# --- websocket (the real application: session cookie, origin check, auth middleware) ------------------

async def connect(run_id, person=None):
    headers = [(b"origin", b"http://localhost"), (b"host", b"localhost")]
    if person is not None:
        client = Client()
        await sync_to_async(client.force_login)(person)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    comm = WebsocketCommunicator(application, f"/ws/runs/{run_id}/", headers=headers)
    connected, code = await comm.connect(timeout=5)
    if connected:
        # A refusal is a socket accepted and closed at once, with a code the page understands
        # (a handshake refused outright reaches the browser as 1006: tests/dashboard/test_websocket_refusals.py).
        first = await comm.receive_output(timeout=5)
        if first["type"] == "websocket.close":
            return False, first.get("code")
        await comm.disconnect()
    return connected, code


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_refuses_anyone_who_may_not_see_the_run(user, other_user):
    run = await sync_to_async(make_run)(user, events=1)
    assert await connect(run.pk) == (False, 4401)
    assert await connect(run.pk, other_user) == (False, 4403)
    assert await connect(999999, user) == (False, 4403)  # no such run: the same answer
    assert (await connect(run.pk, user))[0] is True


@pytest.mark.django_db(transaction=True)
async def test_staff_and_reviewers_may_watch_any_run(user, staff_user, reviewer):
    run = await sync_to_async(make_run)(user, events=1)
    assert (await connect(run.pk, staff_user))[0] is True
    assert (await connect(run.pk, reviewer))[0] is True


@pytest.mark.django_db(transaction=True)
async def test_the_websocket_rejects_other_origins(user):
    run = await sync_to_async(make_run)(user)
    client = Client()
    await sync_to_async(client.force_login)(user)
    comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
        (b"origin", b"http://evil.example"), (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())])
    connected, _ = await comm.connect(timeout=5)
    assert connected is False
