"""Who may act, and how fast anyone may guess a password.

- Reviewers see every run and judge it; only its owner (and staff) act on it: cancel it, replay it
  through a session. Only the owner manages its replay token.
- The login brake is one check in the authentication backend, shared by every login form
  (/accounts/login/ and /admin/login/) and the password-change forms, and counts each attempt
  before the password hash is checked: parallel attempts cannot all slip through on the same old count.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.core.cache import cache
from django.test import Client

from streams.models import Run, RunStatus
from tests.support.factories import make_run

LIMIT = 5


@pytest.fixture(autouse=True)
def fresh_brake(settings):
    settings.STREAMSCOPE_LOGIN_MAX_FAILURES = LIMIT
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast; see slow_counted_hasher
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def reviewer(django_user_model):
    person = django_user_model.objects.create_user("rita", password="rita-pass-123")
    person.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    return person


def client_for(person=None) -> Client:
    client = Client()
    if person is not None:
        client.force_login(person)
    return client


def logged_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- defect 5: reviewers see and judge; owners (and staff) act ----------------------------------

@pytest.mark.django_db
def test_a_reviewer_cannot_cancel_someone_elses_live_run(user, reviewer):
    run = make_run(user, status=RunStatus.STREAMING, events=1)
    response = client_for(reviewer).post(f"/api/runs/{run.pk}/cancel/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "forbidden"
    run.refresh_from_db()
    assert run.status == RunStatus.STREAMING


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("actor", ["owner", "staff"])
def test_the_owner_and_staff_may_cancel_a_live_run(user, staff_user, actor):
    run = make_run(user, status=RunStatus.STREAMING, events=1)
    response = client_for(user if actor == "owner" else staff_user).post(f"/api/runs/{run.pk}/cancel/")
    assert response.status_code == 202, response.content


@pytest.mark.django_db
def test_a_reviewer_cannot_replay_someone_elses_run_through_the_session(user, reviewer):
    run = make_run(user, events=3)
    client = client_for(reviewer)
    assert client.get(f"/api/runs/{run.pk}/").status_code == 200  # they may see it...
    for body in ({"stream": True}, {}):
        response = client.post(f"/replay/{run.pk}/v1/responses", body, content_type="application/json")
        assert response.status_code in (403, 404), response.content  # ...not replay it
        assert response.json()["error"]["code"] in ("not_found", "forbidden")


@pytest.mark.django_db
@pytest.mark.parametrize("actor", ["owner", "staff"])
def test_the_owner_and_staff_may_replay_through_the_session(user, staff_user, actor):
    run = make_run(user, events=3)
    client = client_for(user if actor == "owner" else staff_user)
    response = client.post(f"/replay/{run.pk}/v1/responses", {"stream": True}, content_type="application/json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")


@pytest.mark.django_db
def test_only_the_owner_makes_a_replay_token_not_a_reviewer_nor_staff(user, reviewer, staff_user):
    run = make_run(user, events=1)
    url = f"/api/runs/{run.pk}/replay-token/"
    for person in (reviewer, staff_user):
        client = client_for(person)
        assert client.post(url).status_code == 403
        assert client.delete(url).status_code == 403
    assert client_for(user).post(url).status_code == 201


@pytest.mark.django_db
def test_a_reviewer_cannot_open_someone_elses_fan_out_group(user, reviewer):
    from streams.models import RunGroup

    group = RunGroup.objects.create(owner=user, input="hi")
    assert client_for(reviewer).get(f"/api/groups/{group.pk}/").status_code == 404
    assert client_for(user).get(f"/api/groups/{group.pk}/").status_code == 200


@pytest.mark.django_db
def test_a_reviewer_cannot_pin_someone_elses_run(user, reviewer, staff_user):
    run = make_run(user, events=1)
    assert client_for(reviewer).post(f"/runs/{run.pk}/pin/", {"pinned": "1"}).status_code == 404
    run.refresh_from_db()
    assert not run.pinned
    assert client_for(staff_user).post(f"/runs/{run.pk}/pin/", {"pinned": "1"}).status_code == 302
    run.refresh_from_db()
    assert run.pinned


@pytest.mark.django_db(transaction=True)
async def test_a_reviewers_websocket_cannot_act_on_the_run(user, reviewer):
    # Viewers only listen: whatever a reviewer sends down the socket, the run goes on.
    import json

    from asgiref.sync import sync_to_async
    from channels.testing import WebsocketCommunicator

    from dashboard.asgi import application

    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)
    client = Client()
    await sync_to_async(client.force_login)(reviewer)
    comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
        (b"origin", b"http://localhost"), (b"host", b"localhost"),
        (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())])
    assert (await comm.connect(timeout=5))[0]
    try:
        for command in ('{"type":"cancel"}', "cancel", '{"type":"run.status","status":"cancelled"}', "stop"):
            await comm.send_to(text_data=command)
        await comm.send_to(text_data="ping")
        while (frame := json.loads(await comm.receive_from(timeout=5)))["type"] != "pong":
            assert frame["type"] in ("events", "status", "flag")
            assert frame.get("status") in (None, RunStatus.STREAMING)
        await run.arefresh_from_db()
        assert run.status == RunStatus.STREAMING
    finally:
        await comm.disconnect()


# --- defect 2: /admin/login/ is braked like /accounts/login/ ------------------------------------

def admin_login(client: Client, username: str, password: str):
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password,
                                                      "next": "/admin/"})


@pytest.mark.django_db
def test_the_admin_login_is_braked_after_repeated_failures(staff_user):
    client = Client()
    for _ in range(LIMIT):
        assert admin_login(client, "carol", "wrong").status_code == 200
    response = admin_login(client, "carol", "carol-pass-123")  # the right password, too late
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.content
    assert not logged_in(client)


@pytest.mark.django_db
def test_failures_on_the_site_login_lock_the_admin_login_too(staff_user):
    client = Client()
    for _ in range(LIMIT):
        client.post("/accounts/login/", {"username": "carol", "password": "wrong"})
    assert client.post("/accounts/login/", {"username": "carol", "password": "carol-pass-123"}).status_code == 429
    response = admin_login(client, "carol", "carol-pass-123")
    assert response.status_code == 429
    assert not logged_in(client)


@pytest.mark.django_db
def test_the_brake_counts_per_username_across_addresses(staff_user):
    for number in range(LIMIT):
        Client(REMOTE_ADDR=f"10.0.0.{number}").post("/admin/login/", {"username": "Carol", "password": "wrong"})
    client = Client(REMOTE_ADDR="10.0.1.1")
    assert admin_login(client, "carol", "carol-pass-123").status_code == 429
    assert not logged_in(client)


@pytest.mark.django_db
def test_the_admin_login_still_works_below_the_limit(staff_user):
    client = Client()
    for _ in range(LIMIT - 1):
        admin_login(client, "carol", "wrong")
    response = admin_login(client, "carol", "carol-pass-123")
    assert response.status_code == 302 and response.url == "/admin/"
    assert logged_in(client)


@pytest.mark.django_db
def test_successful_logins_do_not_use_up_attempts(user):
    for _ in range(LIMIT * 2):
        client = Client()
        assert client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"}).status_code == 302
    client = Client()
    for _ in range(LIMIT):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 200
    assert client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"}).status_code == 429


def change_password(client: Client, url: str, old: str):
    return client.post(url, {"old_password": old, "new_password1": "a-new-pass-4567",
                             "new_password2": "a-new-pass-4567"})


@pytest.mark.django_db
@pytest.mark.parametrize("url", ["/accounts/password_change/", "/admin/password_change/"])
def test_a_password_change_is_braked_like_a_login(staff_user, url):
    client = client_for(staff_user)
    for _ in range(LIMIT):
        response = change_password(client, url, "wrong")
        assert response.status_code == 200 and response.context["form"].errors["old_password"]
    response = change_password(client, url, "carol-pass-123")  # the right old password, too late
    assert response.status_code == 429 and b"Too many failed attempts" in response.content
    staff_user.refresh_from_db()
    assert staff_user.check_password("carol-pass-123")  # unchanged
    # ... and the same counts lock the login with that username.
    assert Client().post("/accounts/login/", {"username": "carol", "password": "carol-pass-123"}).status_code == 429


@pytest.mark.django_db
@pytest.mark.parametrize("url, done", [("/accounts/password_change/", "/accounts/password_change/done/"),
                                       ("/admin/password_change/", "/admin/password_change/done/")])
def test_a_password_change_below_the_limit_still_works(staff_user, url, done):
    client = client_for(staff_user)
    change_password(client, url, "wrong")
    response = change_password(client, url, "carol-pass-123")
    assert response.status_code == 302 and response.url == done
    staff_user.refresh_from_db()
    assert staff_user.check_password("a-new-pass-4567")


@pytest.mark.django_db
def test_the_admin_password_change_is_for_staff_only(user):
    response = client_for(user).get("/admin/password_change/")
    assert response.status_code == 302 and response.url.startswith("/admin/login/")


# --- defect 4: the count is taken before the hash, atomically -----------------------------------

@pytest.fixture
def slow_counted_hasher(monkeypatch):
    """check_password made slow (a real hash takes ~0.3 s) and counted."""
    calls = []
    lock = threading.Lock()
    real = AbstractBaseUser.check_password

    def check_password(self, raw_password):
        with lock:
            calls.append(raw_password)
        time.sleep(0.2)
        return real(self, raw_password)

    monkeypatch.setattr(AbstractBaseUser, "check_password", check_password)
    return calls


def parallel_posts(url: str, data: dict, count: int) -> list[int]:
    statuses: list[int] = []
    barrier = threading.Barrier(count)

    def attempt():
        from django.db import connection

        try:
            client = Client()
            barrier.wait(timeout=30)
            statuses.append(client.post(url, data).status_code)
        finally:
            connection.close()

    threads = [threading.Thread(target=attempt, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return statuses


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("url", ["/accounts/login/", "/admin/login/"])
def test_parallel_wrong_attempts_reach_the_hasher_at_most_limit_times(staff_user, slow_counted_hasher, url):
    statuses = parallel_posts(url, {"username": "carol", "password": "wrong"}, 24)
    assert len(statuses) == 24
    assert len(slow_counted_hasher) <= LIMIT, f"{len(slow_counted_hasher)} attempts were checked"
    assert statuses.count(429) >= 24 - LIMIT
    # ...and the right password is refused now, without a hash.
    before = len(slow_counted_hasher)
    assert Client().post(url, {"username": "carol", "password": "carol-pass-123"}).status_code == 429
    assert len(slow_counted_hasher) == before


@pytest.mark.django_db
def test_a_locked_refusal_never_checks_the_password(user, slow_counted_hasher):
    client = Client()
    for _ in range(LIMIT):
        client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
    assert len(slow_counted_hasher) == LIMIT
    for _ in range(3):
        assert client.post("/accounts/login/", {"username": "alice", "password": "wrong"}).status_code == 429
    assert len(slow_counted_hasher) == LIMIT
    assert Run.objects.count() == 0  # (nothing else happened meanwhile)


def test_the_run_page_offers_stop_and_pin_only_to_who_may_act(client, user, django_user_model):
    run = make_run(user, status="streaming")
    reviewer = django_user_model.objects.create_user("rita-stop", password="rita-pass-123")
    reviewer.groups.add(Group.objects.get_or_create(name="reviewer")[0])
    client.force_login(reviewer)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "data-stop" not in page and "data-pin-form" not in page
    client.force_login(user)
    page = client.get(f"/runs/{run.pk}/").content.decode()
    assert "data-stop" in page and "data-pin-form" in page
