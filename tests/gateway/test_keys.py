"""Whose upstream key: the server's by default; a "caller" provider forwards the caller's own key
from X-Upstream-Authorization, which is never stored, logged, published or answered."""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from channels.layers import get_channel_layer
from django.test import AsyncClient

from streams.models import Event, Run, RunFlag
from streams.pipeline.broadcast import group_name
from tests.support.upstreams import Script, sse

pytestmark = pytest.mark.django_db(transaction=True)

SECRET = "sk-caller-Very-Secret-0123456789"
RESP = {"id": "resp_k", "object": "response", "status": "in_progress", "output": [], "usage": None}
EVENTS = [
    {"type": "response.created", "sequence_number": 0, "response": RESP},
    {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0,
     "content_index": 0, "delta": "hello"},
    {"type": "response.completed", "sequence_number": 2, "response": {**RESP, "status": "completed"}},
]


@pytest.fixture
def providers(upstream, settings):
    settings.STREAMSCOPE_EXTRA_PROVIDERS = json.dumps([
        {"name": "own-key", "base_url": upstream.base_url, "gateway_key": "caller"},
        {"name": "server-key", "base_url": upstream.base_url, "key_env": "SERVER_KEY_FOR_TEST"},
    ])
    return upstream


async def ended(run_id):
    for _ in range(200):
        run = await Run.objects.aget(pk=run_id)
        if run.status not in ("queued", "streaming"):
            return run
        await asyncio.sleep(0.05)
    return run


async def test_the_callers_key_is_forwarded_and_kept_nowhere(providers, token, user, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    providers.scripts.append(Script(steps=[(0, sse(*EVENTS))]))
    layer = get_channel_layer()
    channel = await layer.new_channel()
    published = []
    response = await AsyncClient().post(
        "/gateway/own-key/v1/responses", json.dumps({"model": "m", "input": "hi", "stream": True}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "X-Upstream-Authorization": f"Bearer {SECRET}"})
    run_id = int(response["x-streamscope-run"])
    await layer.group_add(group_name(run_id), channel)
    body = b"".join([chunk async for chunk in response.streaming_content])
    run = await ended(run_id)
    assert run.status == "completed"
    while True:
        try:
            published.append(await asyncio.wait_for(layer.receive(channel), 0.2))
        except TimeoutError:
            break
    sent = providers.requests[0]["headers"]
    assert sent["authorization"] == f"Bearer {SECRET}"  # forwarded...
    assert token not in json.dumps(providers.requests[0]["headers"])  # ...and our token is not
    assert "x-upstream-authorization" not in sent

    client = AsyncClient()
    answers = [body, str(dict(response.items())).encode()]
    for url in ("/api/runs/", f"/api/runs/{run_id}/", f"/api/runs/{run_id}/events/"):
        answers.append((await client.get(url, headers={"Authorization": f"Bearer {token}"})).content)
    await client.aforce_login(user)
    for url in (f"/runs/{run_id}/", "/runs/", f"/runs/{run_id}/export.sse", f"/runs/{run_id}/export.jsonl"):
        page = await client.get(url)
        assert page.status_code == 200, url
        answers.append(page.content if not page.streaming else b"".join([c async for c in page.streaming_content]))
    stored = [json.dumps([r async for r in Run.objects.filter(pk=run_id).values()], default=str)]
    stored.append(json.dumps([e async for e in Event.objects.values_list("data", flat=True)]))
    stored.append(json.dumps([f async for f in RunFlag.objects.values()], default=str))
    for where in [*answers, *[s.encode() for s in stored], json.dumps(published, default=str).encode(),
                  caplog.text.encode()]:
        assert SECRET.encode() not in where
        assert b"Very-Secret" not in where


async def test_a_caller_key_provider_needs_the_header(providers, token):
    response = await AsyncClient().post("/gateway/own-key/v1/responses", "{}", content_type="application/json",
                                        headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert json.loads(response.content)["error"]["code"] == "missing_upstream_key"
    assert providers.requests == []


async def test_a_server_key_provider_sends_the_servers_key_not_the_callers(providers, token, monkeypatch):
    monkeypatch.setenv("SERVER_KEY_FOR_TEST", "sk-server-key")
    providers.scripts.append(Script(steps=[(0, sse(*EVENTS))]))
    response = await AsyncClient().post(
        "/gateway/server-key/v1/responses", json.dumps({"model": "m", "input": "hi", "stream": True}),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "X-Upstream-Authorization": f"Bearer {SECRET}"})
    b"".join([chunk async for chunk in response.streaming_content])
    await ended(int(response["x-streamscope-run"]))
    assert providers.requests[0]["headers"]["authorization"] == "Bearer sk-server-key"
    assert SECRET not in json.dumps(providers.requests[0]["headers"])
