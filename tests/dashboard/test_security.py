"""Security: login brake, deploy settings, CSP without inline script, websocket origin, key secrecy."""

import json
import logging
import os
import re
import subprocess
import sys

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache
from django.db import connection
from django.test import AsyncClient

from streams.models import Run, RunStatus
from tests.support.factories import make_run
from tests.support.servers import ROOT
from tests.support.upstreams import Script, ScriptedUpstream, sse, text_stream

SECRET = "sk-streamscope-TEST-SECRET-9f8e7d6c5b4a"


@pytest.fixture(autouse=True)
def fresh_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.mark.django_db
def test_login_is_braked_after_repeated_failures(client, user):
    for _ in range(5):
        response = client.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert response.status_code == 200
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 429
    assert b"Too many failed attempts" in response.content
    assert "_auth_user_id" not in client.session


@pytest.mark.django_db
def test_a_good_login_works_and_pages_need_it(client, user):
    assert client.get("/").status_code == 302
    assert client.get("/runs/").url.startswith("/accounts/login/")
    response = client.post("/accounts/login/", {"username": "alice", "password": "alice-pass-123"})
    assert response.status_code == 302
    assert client.get("/").status_code == 200


def test_production_settings_pass_check_deploy(tmp_path):
    env = {**os.environ, "STREAMSCOPE_MODE": "production", "DJANGO_SECRET_KEY": "x" * 20 + "-Qz8!randomish-" + "y" * 40,
           "DJANGO_ALLOWED_HOSTS": "streamscope.example", "STREAMSCOPE_VAR_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    result = subprocess.run([sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
                            cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key(tmp_path):
    env = {**os.environ, "STREAMSCOPE_MODE": "production", "STREAMSCOPE_VAR_DIR": str(tmp_path),
           "DJANGO_SETTINGS_MODULE": "dashboard.settings"}
    env.pop("DJANGO_SECRET_KEY", None)
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert result.returncode != 0 and "DJANGO_SECRET_KEY must be set" in result.stderr


@pytest.mark.django_db
def test_pages_carry_a_csp_and_no_inline_script(client, user):
    run = make_run(user, events=3)
    client.force_login(user)
    for url in ["/", "/runs/", f"/runs/{run.pk}/", "/accounts/login/"]:
        response = client.get(url)
        assert response.status_code == 200, url
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp
        for tag in re.findall(r"<script\b[^>]*>", response.content.decode()):
            assert 'src="' in tag or 'type="application/json"' in tag, (url, tag)
        assert " style=" not in response.content.decode(), url


@pytest.mark.django_db(transaction=True)
async def test_websocket_refuses_foreign_or_missing_origin(user):
    from dashboard.asgi import application

    run = await sync_to_async(make_run)(user, events=1)
    session_cookie = await _session_cookie(user)
    for headers in ([(b"origin", b"http://evil.example")], []):
        comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/",
                                     headers=[(b"host", b"localhost"), (b"cookie", session_cookie), *headers])
        connected, _ = await comm.connect()
        assert not connected
    comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/",
                                 headers=[(b"host", b"localhost"), (b"origin", b"http://localhost"),
                                          (b"cookie", session_cookie)])
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()


@sync_to_async
def _session_cookie(user) -> bytes:
    from django.test import Client

    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
async def test_an_api_key_never_leaves_the_server(user, settings, caplog, monkeypatch):
    """Stream with a secret key, then look for it everywhere a person or a log could see."""
    from dashboard.asgi import application

    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LEAKY_TEST_KEY", SECRET)
    server = await ScriptedUpstream().start()
    settings.STREAMSCOPE_EXTRA_PROVIDERS = json.dumps(
        [{"name": "keyed", "base_url": server.base_url, "key_env": "LEAKY_TEST_KEY", "models": ["m"]}]
    )
    events = text_stream(["safe", " text"])
    server.scripts.append(Script(steps=[(0, sse(*events))]))
    try:
        client = AsyncClient()
        await sync_to_async(client.force_login)(user)
        response = await client.post("/api/runs/", data=json.dumps({"provider": "keyed", "model": "m", "input": "hi"}),
                                     content_type="application/json")
        assert response.status_code == 201
        run_id = response.json()["id"]
        for _ in range(200):
            run = await Run.objects.aget(pk=run_id)
            if run.status == RunStatus.COMPLETED:
                break
            await __import__("asyncio").sleep(0.02)
        assert run.status == RunStatus.COMPLETED
        # It was sent upstream, in the header only.
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {SECRET}"
        assert SECRET.encode() not in server.requests[0]["body"]

        seen = []
        for url in ["/", "/runs/", f"/runs/{run_id}/", "/api/runs/", f"/api/runs/{run_id}/",
                    f"/api/runs/{run_id}/events/", "/api/providers/"]:
            seen.append((await client.get(url)).content.decode())
        comm = WebsocketCommunicator(application, f"/ws/runs/{run_id}/", headers=[
            (b"host", b"localhost"), (b"origin", b"http://localhost"), (b"cookie", await _session_cookie(user))])
        assert (await comm.connect())[0]
        while True:
            frame = await comm.receive_from(timeout=3)
            seen.append(frame)
            if json.loads(frame)["type"] == "status" and json.loads(frame)["status"] == "completed":
                break
        await comm.disconnect()
        seen.append(await sync_to_async(_dump_database)())
        seen.append(caplog.text)
        for text in seen:
            assert SECRET not in text
        assert "LEAKY_TEST_KEY" not in "".join(seen[:7])  # not even the variable's name on pages
    finally:
        await server.stop()


def _dump_database() -> str:
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            cursor.execute(f'SELECT * FROM "{table}"')
            lines.extend(repr(row) for row in cursor.fetchall())
    return "\n".join(lines)
