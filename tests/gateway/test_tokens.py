"""Personal API tokens: made on the tokens page or by manage.py, hashed, revocable, Bearer on the API."""

import io
import json
from datetime import timedelta

import httpx
import pytest
from django.core.management import call_command
from django.test import Client
from django.utils import timezone

from dashboard.models import ApiToken
from dashboard.tokens import hash_token, issue_token
from streams.models import Run
from tests.support.servers import manage, start_daphne, stop_process

pytestmark = pytest.mark.django_db


def bearer(secret):
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_create_token_command_prints_the_token_alone_on_its_last_line(user):
    out = io.StringIO()
    call_command("create_token", "alice", "--name", "ci", stdout=out, stderr=io.StringIO())
    secret = out.getvalue().strip().splitlines()[-1]
    token = ApiToken.objects.get(owner=user)
    assert token.name == "ci"
    assert secret.startswith("ssk_") and len(secret) > 40
    assert token.token_hash == hash_token(secret) and secret not in token.token_hash
    assert secret.startswith(token.prefix) and len(token.prefix) < len(secret) // 2
    assert Client().get("/api/runs/", **bearer(secret)).status_code == 200


def test_create_token_command_unknown_user_fails():
    from django.core.management.base import CommandError

    with pytest.raises(CommandError):
        call_command("create_token", "nobody", stdout=io.StringIO())


def test_bearer_token_works_on_the_api_and_writes_need_no_csrf(user):
    _, secret = issue_token(user, "script")
    client = Client(enforce_csrf_checks=True)
    answer = client.post("/api/runs/", json.dumps({"model": "sim-text", "input": "hi"}),
                         content_type="application/json", **bearer(secret))
    # The run is accepted (201) or refused for a reason that is not auth/CSRF; never 401/403.
    assert answer.status_code not in (401, 403), answer.content
    listed = client.get("/api/runs/", **bearer(secret)).json()
    assert "runs" in listed


def test_session_writes_keep_their_csrf_check(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    answer = client.post("/api/runs/", json.dumps({"model": "sim-text", "input": "hi"}),
                         content_type="application/json")
    assert answer.status_code == 403


def test_unknown_and_revoked_tokens_get_a_json_401(user):
    token, secret = issue_token(user)
    client = Client()
    assert client.get("/api/runs/", **bearer(secret)).status_code == 200
    token.revoked_at = timezone.now()
    token.save()
    for header in (bearer(secret), bearer("ssk_nonsense"), bearer("not-ours"), {"HTTP_AUTHORIZATION": "Basic eA=="}):
        answer = client.get("/api/runs/", **header)
        assert answer.status_code == 401
        assert answer["Content-Type"].startswith("application/json")
        assert answer.json()["error"]["code"] == "invalid_token"


def test_a_bad_token_is_refused_even_with_a_session(user):
    client = Client()
    client.force_login(user)
    assert client.get("/api/runs/", **bearer("ssk_wrong")).status_code == 401
    assert client.get("/api/runs/").status_code == 200


def test_a_token_sees_only_its_owners_runs(user, other_user):
    mine = Run.objects.create(owner=user, provider="simulator", model="m", request={"input": "mine"})
    theirs = Run.objects.create(owner=other_user, provider="simulator", model="m", request={"input": "theirs"})
    _, secret = issue_token(user)
    client = Client()
    ids = [run["id"] for run in client.get("/api/runs/?all=1", **bearer(secret)).json()["runs"]]
    assert ids == [mine.pk]
    assert client.get(f"/api/runs/{mine.pk}/", **bearer(secret)).status_code == 200
    assert client.get(f"/api/runs/{theirs.pk}/", **bearer(secret)).status_code == 404
    assert client.post(f"/api/runs/{theirs.pk}/cancel/", **bearer(secret)).status_code == 404


def test_last_used_is_written_at_most_once_a_minute(user):
    token, secret = issue_token(user)
    client = Client()
    client.get("/api/runs/", **bearer(secret))
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    client.get("/api/runs/", **bearer(secret))
    token.refresh_from_db()
    assert token.last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get("/api/runs/", **bearer(secret))
    token.refresh_from_db()
    assert token.last_used_at > first - timedelta(minutes=2)


def test_tokens_are_not_accepted_on_pages(user):
    _, secret = issue_token(user)
    answer = Client().get("/runs/", HTTP_AUTHORIZATION=f"Bearer {secret}")
    assert answer.status_code == 302  # pages need a session: the token is for the API and the gateway


def test_tokens_page_makes_shows_once_renames_and_revokes(user, other_user):
    client = Client()
    client.force_login(user)
    made = client.post("/settings/tokens/", {"action": "create", "name": "laptop"})
    assert made.status_code == 201
    html = made.content.decode()
    token = ApiToken.objects.get(owner=user)
    secret = html.split("data-token-secret>")[1].split("<")[0]
    assert token.token_hash == hash_token(secret)
    assert "no-cache" in made["Cache-Control"] or "no-store" in made["Cache-Control"]
    listing = client.get("/settings/tokens/").content.decode()
    assert secret not in listing and token.prefix in listing and "laptop" in listing

    client.post("/settings/tokens/", {"action": "rename", "token": token.pk, "name": "desk"})
    token.refresh_from_db()
    assert token.name == "desk"

    # Someone else cannot revoke it.
    intruder = Client()
    intruder.force_login(other_user)
    assert intruder.post("/settings/tokens/", {"action": "revoke", "token": token.pk}).status_code == 404
    assert Client().get("/api/runs/", **bearer(secret)).status_code == 200

    client.post("/settings/tokens/", {"action": "revoke", "token": token.pk})
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client().get("/api/runs/", **bearer(secret)).status_code == 401  # at once


def test_tokens_page_needs_login():
    assert Client().get("/settings/tokens/").status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_bearer_tokens_through_the_asgi_handler(user):
    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    _token, secret = await sync_to_async(issue_token)(user)
    client = AsyncClient(enforce_csrf_checks=True)
    assert (await client.get("/api/runs/", headers={"Authorization": f"Bearer {secret}"})).status_code == 200
    assert (await client.get("/api/runs/", headers={"Authorization": "Bearer ssk_x"})).status_code == 401


@pytest.mark.server
def test_a_token_revoked_by_another_process_stops_working_at_once_on_the_gateway(tmp_path):
    """The gateway's direct path reads tokens on its own kept SQLite connection (dashboard.tokens.token_owner):
    a revocation committed by any other process is seen by the very next request."""
    manage(tmp_path, "migrate", "--noinput")
    manage(tmp_path, "shell", "-c", "from django.contrib.auth.models import User; User.objects.create_user('alice')")
    secret = manage(tmp_path, "create_token", "alice").strip().splitlines()[-1]
    process, base_url = start_daphne(tmp_path)
    try:
        url = f"{base_url}/gateway/simulator/v1/models"
        assert httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code == 200
        used = manage(tmp_path, "shell", "-c", "from dashboard.models import ApiToken; "
                                               "print(ApiToken.objects.get().last_used_at is not None)")
        assert used.strip().splitlines()[-1] == "True"  # (the shell's import note comes first)
        assert httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10).status_code == 200
        manage(tmp_path, "shell", "-c", "from dashboard.models import ApiToken; from dashboard.tokens import "
                                        "revoke_token; revoke_token(ApiToken.objects.get())")
        refused = httpx.get(url, headers={"Authorization": f"Bearer {secret}"}, timeout=10)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        unknown = httpx.get(url, headers={"Authorization": "Bearer ssk_nobody"}, timeout=10)
        assert unknown.status_code == 401
    finally:
        stop_process(process)
