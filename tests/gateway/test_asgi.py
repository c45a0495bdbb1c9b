"""The gateway's direct ASGI path (dashboard/api/gateway.py, GatewayASGI): the same answers as
through Django, every chunk sent as it arrives, the client leaving ends the run, and requests
Django should judge (hosts, other paths) left to Django."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application

from dashboard.api.gateway import GatewayASGI
from streams.models import Event, Run
from tests.gateway.test_gateway import ended_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]

URL = "/gateway/simulator/v1"
SEEDED = {"model": "sim-text", "input": "Why is the sky blue?", "stream": True,
          "metadata": {"sim_seed": "7", "sim_tokens_per_s": "max"}}


class Exchange:
    """One HTTP exchange with an ASGI app, as a server would drive it."""

    def __init__(self, method: str, path: str, body: bytes = b"", headers: dict | None = None,
                 host: str = "127.0.0.1") -> None:
        raw = {"host": host, **(headers or {})}
        self.scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
                      "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
                      "root_path": "", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000),
                      "headers": [(k.lower().encode(), v.encode()) for k, v in raw.items()]}
        self.inbox: asyncio.Queue = asyncio.Queue()
        self.inbox.put_nowait({"type": "http.request", "body": body, "more_body": False})
        self.sent: list[dict] = []
        self.got_body = asyncio.Event()

    async def receive(self) -> dict:
        return await self.inbox.get()

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and message.get("body"):
            self.got_body.set()

    async def run(self, app) -> Exchange:
        await app(self.scope, self.receive, self.send)
        return self

    @property
    def status(self) -> int:
        return self.sent[0]["status"]

    @property
    def headers(self) -> dict[str, str]:
        return {k.decode().lower(): v.decode() for k, v in self.sent[0]["headers"]}

    @property
    def chunks(self) -> list[bytes]:
        return [m["body"] for m in self.sent[1:] if m.get("body")]


def auth(token: str) -> dict:
    return {"authorization": f"Bearer {token}", "content-type": "application/json"}


def django_app():
    return get_asgi_application()


@sync_to_async
def stored_data(run_id: int) -> list[str]:
    return list(Event.objects.filter(run_id=run_id).order_by("seq").values_list("data", flat=True))


async def test_a_stream_is_sent_chunk_by_chunk_unchanged_and_recorded(sim_upstream, token):
    app = GatewayASGI(django_app())
    exchange = await Exchange("POST", f"{URL}/responses", json.dumps(SEEDED).encode(), auth(token)).run(app)
    assert exchange.status == 200 and exchange.headers["content-type"].startswith("text/event-stream")
    assert exchange.sent[-1] == {"type": "http.response.body", "body": b""}  # the end, after the chunks
    got = b"".join(exchange.chunks)
    async with httpx.AsyncClient(timeout=30) as client:
        want = (await client.post(f"{sim_upstream}/responses", json=SEEDED)).content
    assert got == want
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert (run.source, run.status) == ("gateway", "completed")
    data = [line[6:] for line in got.decode().splitlines() if line.startswith("data: ")]
    assert await stored_data(run.pk) == data


async def test_both_paths_answer_with_the_same_headers(sim_upstream, token):
    django = django_app()
    for method, path, body, headers in (
        ("GET", f"{URL}/models", b"", auth(token)),
        ("GET", f"{URL}/models", b"", {}),  # no token: 401
        ("GET", f"{URL}/models", b"", {"authorization": "Bearer ssk_unknown"}),
        ("POST", f"{URL}/nowhere", b"{}", auth(token)),
    ):
        direct = await Exchange(method, path, body, headers).run(GatewayASGI(django))
        through_django = await Exchange(method, path, body, headers).run(django)
        assert direct.status == through_django.status
        ignored = {"vary", "x-request-id", "openai-processing-ms"}  # Vary: Cookie from the session middleware
        assert {k: v for k, v in direct.headers.items() if k not in ignored} == {
            k: v for k, v in through_django.headers.items() if k not in ignored}
        if direct.status >= 400:
            assert json.loads(b"".join(direct.chunks)) == json.loads(b"".join(through_django.chunks))


async def test_a_revoked_token_stops_working_at_once(sim_upstream, user):
    from dashboard.models import ApiToken
    from dashboard.tokens import issue_token, revoke_token

    _, secret = await sync_to_async(issue_token)(user)
    app = GatewayASGI(django_app())
    assert (await Exchange("GET", f"{URL}/models", b"", auth(secret)).run(app)).status == 200
    await sync_to_async(revoke_token)(await ApiToken.objects.aget(owner=user))
    refused = await Exchange("GET", f"{URL}/models", b"", auth(secret)).run(app)
    assert refused.status == 401
    assert json.loads(b"".join(refused.chunks))["error"]["code"] == "invalid_api_key"


async def test_a_too_large_body_is_refused(sim_upstream, token, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100
    body = json.dumps({**SEEDED, "input": "x" * 200}).encode()
    refused = await Exchange("POST", f"{URL}/responses", body, auth(token)).run(GatewayASGI(django_app()))
    assert refused.status == 413
    assert json.loads(b"".join(refused.chunks))["error"]["code"] == "body_too_large"


async def test_the_client_leaving_mid_stream_cancels_the_run(sim_upstream, token):
    body = {**SEEDED, "metadata": {"sim_tokens_per_s": "20"}}
    exchange = Exchange("POST", f"{URL}/responses", json.dumps(body).encode(), auth(token))
    serving = asyncio.create_task(exchange.run(GatewayASGI(django_app())))
    await asyncio.wait_for(exchange.got_body.wait(), 10)
    exchange.inbox.put_nowait({"type": "http.disconnect"})
    await asyncio.wait_for(serving, 10)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "cancelled" and run.error["code"] == "client_disconnected"


async def test_requests_django_should_judge_go_to_django(settings):
    seen = []

    async def django(scope, receive, send):
        seen.append(scope["path"])

    app = GatewayASGI(django)
    await Exchange("GET", f"{URL}/models", host="evil.example").run(app)  # not in ALLOWED_HOSTS
    await Exchange("GET", "/api/runs/").run(app)
    await Exchange("GET", "/gateway/simulator/v2/models").run(app)
    settings.SECURE_SSL_REDIRECT = True
    await Exchange("GET", f"{URL}/models").run(app)  # plain HTTP: Django redirects
    assert seen == [f"{URL}/models", "/api/runs/", "/gateway/simulator/v2/models", f"{URL}/models"]


async def test_a_stream_past_the_backlogs_memory_bound_goes_through_its_file_and_loses_nothing(
        sim_upstream, token, monkeypatch):
    from streams.gateway import backlog, proxy

    spilled = []
    real_close = backlog.Backlog.close

    def noting_close(held):
        spilled.append(held.spilled_ever)
        real_close(held)

    monkeypatch.setattr(backlog.Backlog, "close", noting_close)
    monkeypatch.setattr(proxy, "MEMORY_BACKLOG_BYTES", 512)  # everything past the first chunk or two: the file
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", 1024)
    monkeypatch.setattr(backlog, "READ_BLOCK_BYTES", 700)  # chunks straddle the blocks read back
    monkeypatch.setattr(proxy, "RECORD_SLICE_BYTES", 256)
    long = {**SEEDED, "metadata": {**SEEDED["metadata"], "sim_tokens": "3000"}}  # many chunks, back to back
    exchange = await Exchange("POST", f"{URL}/responses", json.dumps(long).encode(), auth(token)).run(
        GatewayASGI(django_app()))
    got = b"".join(exchange.chunks)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "completed" and run.error is None
    assert await stored_data(run.pk) == [line[6:] for line in got.decode().splitlines() if line.startswith("data: ")]
    assert spilled and spilled[0] > 0


async def test_a_dashboard_stop_numbers_its_error_event_after_the_last_event_sent(sim_upstream, token):
    from streams.live.control import cancel_run

    body = {**SEEDED, "metadata": {"sim_tokens_per_s": "40"}}
    exchange = Exchange("POST", f"{URL}/responses", json.dumps(body).encode(), auth(token))
    serving = asyncio.create_task(exchange.run(GatewayASGI(django_app())))
    await asyncio.wait_for(exchange.got_body.wait(), 10)
    await asyncio.sleep(0.3)
    run_id = int(exchange.headers["x-streamscope-run"])
    await cancel_run(await Run.objects.aget(pk=run_id))
    await asyncio.wait_for(serving, 10)
    frames = b"".join(exchange.chunks).strip().split(b"\n\n")
    numbers = [json.loads(frame.split(b"data: ", 1)[1])["sequence_number"] for frame in frames if b"data: " in frame]
    assert json.loads(frames[-1].split(b"data: ", 1)[1])["error"]["code"] == "cancelled_by_user"
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # the error event comes next
    assert (await ended_run(run_id)).status == "cancelled"
