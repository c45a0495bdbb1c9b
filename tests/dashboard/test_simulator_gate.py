"""The built-in simulator is never open to strangers, and runs reach it however the server starts."""

import os
import subprocess
import sys
import time

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient, Client

from dashboard import simulator_gate
from dashboard.tokens import issue_token
from streams.upstream.providers import simulator_key
from tests.support.servers import (
    DAPHNE_OPTIONS,
    ROOT,
    free_port,
    manage,
    stop_process,
    wait_for_http,
)

pytestmark = pytest.mark.django_db

STREAM_BODY = {"model": "sim-text", "input": "hi", "stream": True, "metadata": {"sim_tokens_per_s": "5"}}


def test_a_stranger_gets_an_openai_shaped_401():
    for response in (Client().get("/sim/v1/models"),
                     Client().post("/sim/v1/responses", STREAM_BODY, content_type="application/json")):
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"
        assert "token" in response.json()["error"]["message"]


def test_a_wrong_bearer_is_refused():
    response = Client().get("/sim/v1/models", headers={"Authorization": "Bearer sim-internal-guess"})
    assert response.status_code == 401


def test_a_session_an_api_token_and_the_internal_key_are_let_in(user):
    client = Client()
    client.force_login(user)
    assert client.get("/sim/v1/models").status_code == 200
    _token, secret = issue_token(user, "sdk")
    assert Client().get("/sim/v1/models", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    assert Client().get("/sim/v1/models", headers={"Authorization": f"Bearer {simulator_key()}"}).status_code == 200


def test_off_means_404_for_everyone(settings, user):
    settings.STREAMSCOPE_SIMULATOR_ENABLED = False
    client = Client()
    client.force_login(user)
    response = client.get("/sim/v1/models")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "simulator_off"


def test_production_settings_turn_the_simulator_off_unless_asked():
    code = "from django.conf import settings; print(settings.STREAMSCOPE_SIMULATOR_ENABLED)"
    base = {**os.environ, "STREAMSCOPE_MODE": "production", "DJANGO_SECRET_KEY": "x" * 50,
            "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    base.pop("STREAMSCOPE_SIMULATOR", None)
    off = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], cwd=ROOT, env=base,
                         capture_output=True, text=True, check=True)
    on = subprocess.run([sys.executable, "-c", "import django; django.setup(); " + code], cwd=ROOT,
                        env={**base, "STREAMSCOPE_SIMULATOR": "1"}, capture_output=True, text=True, check=True)
    assert off.stdout.strip() == "False"
    assert on.stdout.strip() == "True"


@pytest.mark.django_db(transaction=True)
async def test_one_person_gets_a_bounded_number_of_streams(settings, user):
    settings.STREAMSCOPE_SIMULATOR_MAX_STREAMS = 1
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    first = await client.post("/sim/v1/responses", STREAM_BODY, content_type="application/json")
    assert first.status_code == 200
    second = await client.post("/sim/v1/responses", STREAM_BODY, content_type="application/json")
    assert second.status_code == 429
    assert second.json()["error"]["code"] == "too_many_streams"
    await sync_to_async(first.close)()  # the client went away: the server closes the response
    assert simulator_gate.BUDGET.open_streams.get(f"user:{user.pk}", 0) == 0
    # Unpaced: a non-streamed answer at STREAM_BODY's 5 tokens/s took 25 s, and only its status matters here.
    unpaced = {**STREAM_BODY, "stream": False, "metadata": {"sim_tokens_per_s": "max"}}
    third = await client.post("/sim/v1/responses", unpaced, content_type="application/json")
    assert third.status_code == 200


async def test_frames_beyond_the_rate_wait(settings, monkeypatch):
    settings.STREAMSCOPE_SIMULATOR_MAX_FRAMES_PER_S = 10
    waits = []

    async def fake_sleep(seconds):
        waits.append(seconds)
        budget.buckets["user:1"] = (1.0, time.monotonic())  # time passes

    monkeypatch.setattr(simulator_gate.asyncio, "sleep", fake_sleep)
    budget = simulator_gate.CallerBudget()
    for _ in range(10):
        await budget.take_frame("user:1")
    assert waits == []
    await budget.take_frame("user:1")
    assert len(waits) == 1 and waits[0] > 0
    await budget.take_frame("user:2")  # another person has a bucket of their own
    assert len(waits) == 1


@pytest.mark.server
def test_runs_reach_the_simulator_on_whatever_port_daphne_was_given(tmp_path):
    """Started the way the README's scaled-out section shows, without PORT: runs still complete."""
    manage(tmp_path, "migrate", "--noinput")
    manage(tmp_path, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('ada', password='ada-pass-123')")
    token = manage(tmp_path, "create_token", "ada").strip().splitlines()[-1]
    port = free_port()
    env = {**os.environ, "STREAMSCOPE_VAR_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    for name in ("PORT", "STREAMSCOPE_SIMULATOR_URL", "STREAMSCOPE_SIMULATOR_OPEN"):
        env.pop(name, None)
    log_path = tmp_path / "daphne.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS,
                                    "dashboard.asgi:application"],
                                   cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_for_http(base + "/accounts/login/", process)
        headers = {"Authorization": f"Bearer {token}"}
        created = httpx.post(base + "/api/runs/", json={"provider": "simulator", "model": "sim-text", "input": "hi"},
                             headers=headers, timeout=10)
        assert created.status_code == 201, created.text
        run = {}
        for _ in range(150):
            run = httpx.get(f"{base}/api/runs/{created.json()['id']}/", headers=headers, timeout=10).json()
            if run["status"] not in ("queued", "streaming"):
                break
            time.sleep(0.2)
        assert run["status"] == "completed", run.get("error")
        assert f"runs reach the built-in simulator at {base}/sim/v1" in log_path.read_text()
    finally:
        stop_process(process)
