"""A refused websocket says why, and no socket outlives its session.

Against real Daphne with the ``websockets`` client, as a browser sees it: the in-process test
communicator reports a close code even for a socket closed before its handshake was accepted,
which Daphne answers with HTTP 403 (the browser sees 1006 and static/js/socket.js reconnects
forever). The page stops reconnecting on 4401 (log in again) and 4403 (not yours).
"""

from __future__ import annotations

import asyncio
import json

import pytest
import websockets
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.contrib.sessions.models import Session
from django.test import Client

from dashboard import socket_watches
from dashboard.asgi import application
from tests.support.factories import make_run
from tests.support.live import login
from tests.support.servers import manage, start_daphne, stop_process

RECORDING = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    '"response":{"id":"r","status":"in_progress","output":[]}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    '"output_index":0,"content_index":0,"item_id":"m","delta":"hello"}\n\n'
)


@pytest.fixture(scope="module")
def daphne_app(tmp_path_factory):
    """Daphne serving a migrated app (embedded: SQLite, in-memory layer) with alice, who owns one
    imported run, and bob."""
    var_dir = tmp_path_factory.mktemp("ws-refusals")
    embedded = {"DATABASE_URL": "", "REDIS_URL": "", "STREAMSCOPE_LAUNCHER": "asyncio"}
    manage(var_dir, "migrate", "--noinput", env=embedded)
    manage(var_dir, "shell", "-c",
           "from django.contrib.auth.models import User;"
           "User.objects.create_user('alice', password='alice-pass-123');"
           "User.objects.create_user('bob', password='bob-pass-123')", env=embedded)
    (var_dir / "run.sse").write_text(RECORDING)
    output = manage(var_dir, "import_stream", str(var_dir / "run.sse"), "--user", "alice", env=embedded)
    run_id = int(output.strip().splitlines()[-1])
    process, url = start_daphne(var_dir, extra_env=embedded)
    try:
        yield {"url": url, "run_id": run_id}
    finally:
        stop_process(process)


def cookie_of(client) -> str:
    return "; ".join(f"{name}={value}" for name, value in client.cookies.items())


async def close_code(url: str, path: str, cookie: str | None = None) -> int:
    """Open ``path`` as the page would and return the close code the server ends it with."""
    headers = {"Origin": url, **({"Cookie": cookie} if cookie else {})}
    try:
        async with websockets.connect(url.replace("http", "ws") + path, additional_headers=headers,
                                      open_timeout=10) as socket:
            while True:
                await asyncio.wait_for(socket.recv(), 10)
    except websockets.ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else 1006
    # websockets.InvalidStatus (an HTTP answer to the handshake) propagates: that is the bug.


async def frames_until_status(socket) -> list[dict]:
    frames = []
    while True:
        frame = json.loads(await asyncio.wait_for(socket.recv(), 10))
        frames.append(frame)
        if frame["type"] == "status":
            return frames


@pytest.mark.server
def test_an_anonymous_socket_is_closed_with_4401_not_refused_at_the_handshake(daphne_app):
    assert asyncio.run(close_code(daphne_app["url"], f"/ws/runs/{daphne_app['run_id']}/")) == 4401


@pytest.mark.server
def test_someone_elses_run_and_a_missing_run_close_with_4403(daphne_app):
    bob = cookie_of(login(daphne_app["url"], "bob", "bob-pass-123"))
    url = daphne_app["url"]
    assert asyncio.run(close_code(url, f"/ws/runs/{daphne_app['run_id']}/", bob)) == 4403
    assert asyncio.run(close_code(url, "/ws/runs/987654/", bob)) == 4403


@pytest.mark.server
def test_an_expired_session_closes_with_4401(daphne_app):
    # A cookie for a session the server does not have (expired, flushed): anonymous.
    cookie = "sessionid=thisisnotasessionthisisnotasession"
    assert asyncio.run(close_code(daphne_app["url"], f"/ws/runs/{daphne_app['run_id']}/", cookie)) == 4401


@pytest.mark.server
def test_logging_out_closes_the_open_socket_with_4401(daphne_app):
    url, run_id = daphne_app["url"], daphne_app["run_id"]
    alice = login(url, "alice", "alice-pass-123")
    other_tab = login(url, "alice", "alice-pass-123")  # another session of hers stays open

    async def scenario():
        headers = {"Origin": url}
        ws_url = url.replace("http", "ws") + f"/ws/runs/{run_id}/"
        async with websockets.connect(ws_url, additional_headers={**headers, "Cookie": cookie_of(alice)}) as mine, \
                websockets.connect(ws_url, additional_headers={**headers, "Cookie": cookie_of(other_tab)}) as theirs:
            frames = await frames_until_status(mine)
            assert [e["seq"] for f in frames if f["type"] == "events" for e in f["events"]] == [0, 1]
            await frames_until_status(theirs)
            response = await asyncio.to_thread(
                alice.post, "/accounts/logout/", headers={"X-CSRFToken": alice.cookies["csrftoken"]})
            assert response.status_code == 302
            with pytest.raises(websockets.ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(mine.recv(), 5)
            assert closed.value.rcvd.code == 4401
            # The other session's socket is untouched.
            await theirs.send("ping")
            assert json.loads(await asyncio.wait_for(theirs.recv(), 5)) == {"type": "pong"}

    asyncio.run(scenario())


# --- the periodic re-check, in process (its interval shortened) ---------------------------------

@pytest.fixture
def quick_session_check(monkeypatch):
    monkeypatch.setattr(socket_watches, "SESSION_CHECK_S", 0.2)


@sync_to_async
def _session_cookie(person) -> tuple[bytes, str]:
    client = Client()
    client.force_login(person)
    key = client.cookies["sessionid"].value
    return f"sessionid={key}".encode(), key


async def _open(run_id: int, cookie: bytes) -> WebsocketCommunicator:
    comm = WebsocketCommunicator(application, f"/ws/runs/{run_id}/",
                                 headers=[(b"origin", b"http://localhost"), (b"host", b"localhost"),
                                          (b"cookie", cookie)])
    connected, _ = await comm.connect(timeout=5)
    assert connected
    while json.loads(await comm.receive_from(timeout=5))["type"] != "status":
        pass
    return comm


async def _close_code(comm: WebsocketCommunicator) -> int:
    while True:
        message = await comm.receive_output(timeout=5)
        if message["type"] == "websocket.close":
            return message.get("code")


@pytest.mark.django_db(transaction=True)
async def test_a_session_that_ends_elsewhere_closes_its_sockets_with_4401(user, quick_session_check):
    run = await sync_to_async(make_run)(user, events=2)
    cookie, key = await _session_cookie(user)
    comm = await _open(run.pk, cookie)
    await Session.objects.filter(session_key=key).adelete()  # expired and swept, or flushed elsewhere
    assert await _close_code(comm) == 4401


@pytest.mark.django_db(transaction=True)
async def test_a_reviewer_who_loses_the_role_is_closed_with_4403(user, django_user_model, quick_session_check):
    rita = await sync_to_async(django_user_model.objects.create_user)("rita", password="rita-pass-123")
    group = (await Group.objects.aget_or_create(name="reviewer"))[0]
    await sync_to_async(rita.groups.add)(group)
    run = await sync_to_async(make_run)(user, events=2)
    comm = await _open(run.pk, (await _session_cookie(rita))[0])
    await sync_to_async(rita.groups.remove)(group)
    assert await _close_code(comm) == 4403


@pytest.mark.django_db(transaction=True)
async def test_a_socket_whose_session_holds_stays_open(user, quick_session_check):
    run = await sync_to_async(make_run)(user, events=2)
    comm = await _open(run.pk, (await _session_cookie(user))[0])
    await asyncio.sleep(1)  # several checks
    assert await comm.receive_nothing(timeout=0.2)
    await comm.send_to(text_data="ping")
    assert json.loads(await comm.receive_from(timeout=5)) == {"type": "pong"}
    await comm.disconnect()

