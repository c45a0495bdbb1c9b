"""Scaled out, the login brake and the end of a session cross web processes: failures counted on
one process lock the login on the other (the counts live in Redis), and logging out through one
process closes the session's websocket held open by the other (4401, through the Redis layer)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets

from tests.support.live import login
from tests.support.scaled import scaled_out_marks, two_web_processes

pytestmark = scaled_out_marks()

RECORDING = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    '"response":{"id":"r","status":"in_progress","output":[]}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    '"output_index":0,"content_index":0,"item_id":"m","delta":"hello"}\n\n'
)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from two_web_processes(tmp_path_factory.mktemp("scaled-sessions"),
                                 users=(("alice", "alice-pass-123"), ("carol", "carol-pass-123")))


def test_logging_out_on_one_web_process_closes_the_socket_on_the_other(deployment):
    path = deployment.var_dir / "run.sse"
    path.write_text(RECORDING)
    run_id = int(deployment.manage("import_stream", str(path), "--user", "alice").strip().splitlines()[-1])
    first, second = deployment.webs
    alice = login(first, "alice", "alice-pass-123")
    cookie = "; ".join(f"{name}={value}" for name, value in alice.cookies.items())

    async def scenario() -> int:
        async with websockets.connect(second.replace("http", "ws") + f"/ws/runs/{run_id}/", open_timeout=10,
                                      additional_headers={"Cookie": cookie, "Origin": second}) as socket:
            while json.loads(await asyncio.wait_for(socket.recv(), 10))["type"] != "status":
                pass
            response = await asyncio.to_thread(alice.post, "/accounts/logout/",
                                               headers={"X-CSRFToken": alice.cookies["csrftoken"]})
            assert response.status_code == 302
            try:
                while True:
                    await asyncio.wait_for(socket.recv(), 10)
            except websockets.ConnectionClosed as closed:
                return closed.rcvd.code

    assert asyncio.run(scenario()) == 4401


def test_failures_on_one_web_process_lock_the_login_on_the_other(deployment):
    # Last in this module: the address (127.0.0.1) stays locked for every later login.
    first, second = deployment.webs
    client = httpx.Client(base_url=first, timeout=10)
    client.get("/accounts/login/")
    for _ in range(5):
        response = client.post("/accounts/login/", data={"username": "carol", "password": "wrong",
                                                         "csrfmiddlewaretoken": client.cookies["csrftoken"]})
        assert response.status_code == 200
    other = httpx.Client(base_url=second, timeout=10)
    other.get("/admin/login/")
    response = other.post("/admin/login/", data={"username": "carol", "password": "carol-pass-123",
                                                 "csrfmiddlewaretoken": other.cookies["csrftoken"]})
    assert response.status_code == 429
