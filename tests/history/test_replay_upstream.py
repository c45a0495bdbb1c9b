"""Replay as an upstream: a stored run streamed back to the official openai SDK by a real Daphne.

The runs are recorded for real first: the app's own simulator streams them through the runner into
a migrated database, then the SDK replays them from /replay/<id>/v1/responses.
"""

from __future__ import annotations

import hashlib
import time

import httpx
import openai
import pytest
from openai import OpenAI

from streams.models import ReplayToken
from tests.support.factories import make_run
from tests.support.servers import manage, start_daphne, stop_process

SIM_PARAMS = {"metadata": {"sim_tokens_per_s": "80", "sim_tokens": "24", "sim_seed": "11", "sim_first_token_ms": "120"}}


def login(base_url: str, username: str, password: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={"username": username, "password": password,
                                                     "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    assert response.status_code == 302, response.text
    return client


def csrf(client: httpx.Client) -> dict[str, str]:
    return {"X-CSRFToken": client.cookies["csrftoken"]}


def record_run(client: httpx.Client, model: str = "sim-text") -> dict:
    created = client.post("/api/runs/", json={"provider": "simulator", "model": model, "input": "Tell me about replays",
                                              "params": SIM_PARAMS}, headers=csrf(client))
    assert created.status_code == 201, created.text
    for _ in range(300):
        run = client.get(f"/api/runs/{created.json()['id']}/").json()
        if run["status"] not in ("queued", "streaming"):
            assert run["status"] == "completed", run
            events = client.get(f"/api/runs/{run['id']}/events/?limit=5000").json()["events"]
            return {**run, "events": events}
        time.sleep(0.05)
    raise AssertionError("the recording did not finish")


@pytest.fixture(scope="module")
def replay_app(tmp_path_factory):
    var_dir = tmp_path_factory.mktemp("replay-upstream")
    manage(var_dir, "migrate", "--noinput")
    manage(var_dir, "shell", "-c",
           "from django.contrib.auth.models import User;"
           "User.objects.create_user('alice', password='alice-pass-123');"
           "User.objects.create_user('bob', password='bob-pass-123')")
    process, base_url = start_daphne(var_dir)
    try:
        alice = login(base_url, "alice", "alice-pass-123")
        bob = login(base_url, "bob", "bob-pass-123")
        run = record_run(alice)
        bobs_run = record_run(bob)
        token = alice.post(f"/api/runs/{run['id']}/replay-token/", headers=csrf(alice)).json()["token"]
        bobs_token = bob.post(f"/api/runs/{bobs_run['id']}/replay-token/", headers=csrf(bob)).json()["token"]
        yield {"url": base_url, "alice": alice, "bob": bob, "run": run, "token": token, "bobs_run": bobs_run,
               "bobs_token": bobs_token}
    finally:
        stop_process(process)


def sdk(app, run_id: int, token: str, **kwargs) -> OpenAI:
    return OpenAI(base_url=f"{app['url']}/replay/{run_id}/v1", api_key=token, max_retries=0, **kwargs)


@pytest.mark.server
def test_sdk_stream_gets_the_recorded_events_at_their_pace(replay_app):
    run = replay_app["run"]
    client = sdk(replay_app, run["id"], replay_app["token"])
    started = time.monotonic()
    events = list(client.responses.create(model=run["model"], input="ignored", stream=True))
    elapsed_ms = (time.monotonic() - started) * 1000
    wire = [e for e in run["events"] if not e["type"].startswith("streamscope.")]
    assert [e.type for e in events] == [e["type"] for e in wire]
    assert [e.sequence_number for e in events] == [e["data"]["sequence_number"] for e in wire]
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == run["output_text"]
    # Original timing: the replay cannot end before the recording's last event arrived.
    assert elapsed_ms >= 0.9 * wire[-1]["t"]


@pytest.mark.server
def test_sdk_stream_helper_and_a_speed_factor(replay_app):
    run = replay_app["run"]
    client = sdk(replay_app, run["id"], replay_app["token"])
    started = time.monotonic()
    with client.responses.stream(model=run["model"], input="ignored", metadata={"replay_speed": "4"}) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    elapsed_ms = (time.monotonic() - started) * 1000
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text == run["output_text"]
    assert final.status == "completed" and final.usage.output_tokens == run["usage"]["output_tokens"]
    assert elapsed_ms >= 0.9 * run["events"][-1]["t"] / 4


@pytest.mark.server
def test_speed_max_query_and_non_streaming(replay_app):
    run = replay_app["run"]
    client = sdk(replay_app, run["id"], replay_app["token"], default_query={"speed": "max"})
    assert len(list(client.responses.create(model="m", input="x", stream=True))) == run["event_count"]
    response = client.responses.create(model="m", input="x")
    assert response.output_text == run["output_text"] and response.id == run["events"][0]["data"]["response"]["id"]
    bad = sdk(replay_app, run["id"], replay_app["token"], default_query={"speed": "50"})
    with pytest.raises(openai.BadRequestError, match="speed must be"):
        list(bad.responses.create(model="m", input="x", stream=True))


@pytest.mark.server
def test_tokens_open_only_their_own_run(replay_app):
    run, bobs_run = replay_app["run"], replay_app["bobs_run"]
    for run_id, token in [(run["id"], "ssr_wrong"), (run["id"], replay_app["bobs_token"]),
                          (bobs_run["id"], replay_app["token"]), (run["id"], "sk-not-a-replay-token")]:
        with pytest.raises(openai.AuthenticationError):
            sdk(replay_app, run_id, token).responses.create(model="m", input="x", stream=True)
    anonymous = httpx.post(f"{replay_app['url']}/replay/{run['id']}/v1/responses", json={"stream": True})
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == "missing_api_key"


@pytest.mark.server
def test_a_revoked_token_stops_working(replay_app):
    bob, bobs_run = replay_app["bob"], replay_app["bobs_run"]
    token = bob.post(f"/api/runs/{bobs_run['id']}/replay-token/", headers=csrf(bob)).json()["token"]
    client = sdk(replay_app, bobs_run["id"], token, default_query={"speed": "max"})
    assert list(client.responses.create(model="m", input="x", stream=True))
    # A new token replaces the old one; revoking leaves none.
    with pytest.raises(openai.AuthenticationError):
        sdk(replay_app, bobs_run["id"], replay_app["bobs_token"]).responses.create(model="m", input="x", stream=True)
    assert bob.delete(f"/api/runs/{bobs_run['id']}/replay-token/", headers=csrf(bob)).json() == {"revoked": True}
    with pytest.raises(openai.AuthenticationError):
        client.responses.create(model="m", input="x", stream=True)


@pytest.mark.server
def test_a_browser_session_may_replay_its_own_runs_with_csrf(replay_app):
    alice, bob, run = replay_app["alice"], replay_app["bob"], replay_app["run"]
    url = f"/replay/{run['id']}/v1/responses?speed=max"
    assert alice.post(url, json={"stream": True}).status_code == 403  # no CSRF header
    with alice.stream("POST", url, json={"stream": True}, headers=csrf(alice)) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    assert body.count("event: ") == len([e for e in run["events"] if not e["type"].startswith("streamscope.")])
    assert body.startswith("event: response.created\ndata: {")
    assert bob.post(url, json={"stream": True}, headers=csrf(bob)).status_code == 404


# --- the token API, through Django's test client ---------------------------------------------------
@pytest.mark.django_db
def test_only_the_owner_manages_a_runs_replay_token(client, user, other_user, staff_user):
    run = make_run(user, events=3)
    url = f"/api/runs/{run.pk}/replay-token/"
    assert client.post(url).status_code == 401
    client.force_login(user)
    assert client.get(url).json() == {"exists": False}
    made = client.post(url)
    assert made.status_code == 201
    token = made.json()["token"]
    assert token.startswith("ssr_") and len(token) > 40
    # Only a hash is stored.
    stored = ReplayToken.objects.get(run=run)
    assert stored.token_hash == hashlib.sha256(token.encode()).hexdigest() and token not in stored.token_hash
    assert client.get(url).json()["exists"] is True
    client.force_login(staff_user)
    assert client.post(url).status_code == 403  # staff may look, not mint
    client.force_login(other_user)
    assert client.post(url).status_code == 404
    client.force_login(user)
    assert client.delete(url).json() == {"revoked": True}
    assert not ReplayToken.objects.filter(run=run).exists()


@pytest.mark.django_db
def test_replay_page(client, user, other_user):
    run = make_run(user, events=3)
    client.force_login(user)
    page = client.get(f"/runs/{run.pk}/replay/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "js/pages/replay_page.js" in html and "data-replay-bar" in html and "data-upstream" in html
    assert "<script>" not in html and "style=" not in html
    client.force_login(other_user)
    assert client.get(f"/runs/{run.pk}/replay/").status_code == 404
