"""The live wall (/ws/wall/): the runs page's rows, kept current over a websocket."""

from __future__ import annotations

import json

import pytest
from channels.testing import WebsocketCommunicator

from dashboard import wall
from streams.models import Run

pytestmark = pytest.mark.django_db(transaction=True)


async def open_wall(user, query=""):
    communicator = WebsocketCommunicator(wall.RunsWallConsumer.as_asgi(), f"/ws/wall/?{query}")
    communicator.scope["user"] = user
    communicator.scope["query_string"] = query.encode()
    connected, _ = await communicator.connect()
    assert connected
    return communicator


async def next_runs(communicator, timeout=3.0):
    return json.loads(await communicator.receive_from(timeout=timeout))


async def test_the_wall_sends_the_page_then_what_changes(user, other_user, monkeypatch):
    monkeypatch.setattr(wall, "WALL_INTERVAL_S", 0.05)
    mine = await Run.objects.acreate(owner=user, provider="simulator", model="m", source="gateway", status="streaming")
    await Run.objects.acreate(owner=other_user, provider="simulator", model="m", source="gateway")
    await Run.objects.acreate(owner=user, provider="simulator", model="m", source="playground")
    communicator = await open_wall(user, "source=gateway")
    try:
        first = await next_runs(communicator)
        assert first["ids"] == [mine.pk] and first["runs"][0]["status"] == "streaming"
        await Run.objects.filter(pk=mine.pk).aupdate(event_count=42)
        update = await next_runs(communicator)
        assert update["runs"] == [{**first["runs"][0], "event_count": 42}]
        newer = await Run.objects.acreate(owner=user, provider="simulator", model="m", source="gateway")
        appeared = await next_runs(communicator)
        assert appeared["ids"] == [newer.pk, mine.pk] and [r["id"] for r in appeared["runs"]] == [newer.pk]
        await Run.objects.filter(pk=mine.pk).aupdate(status="completed", ttft_ms=12.5)
        done = await next_runs(communicator)
        assert done["runs"][0]["status"] == "completed" and done["runs"][0]["ttft_ms"] == 12.5
    finally:
        await communicator.disconnect()


async def test_the_wall_refuses_strangers_and_bad_filters(user):
    from django.contrib.auth.models import AnonymousUser

    communicator = WebsocketCommunicator(wall.RunsWallConsumer.as_asgi(), "/ws/wall/")
    communicator.scope["user"] = AnonymousUser()
    await communicator.connect()
    assert (await communicator.receive_output(timeout=2))["code"] == wall.CLOSE_UNAUTHENTICATED
    bad = WebsocketCommunicator(wall.RunsWallConsumer.as_asgi(), "/ws/wall/?status=nope")
    bad.scope["user"] = user
    bad.scope["query_string"] = b"status=nope"
    await bad.connect()
    assert (await bad.receive_output(timeout=2))["code"] == wall.CLOSE_BAD_QUERY


async def test_the_wall_closes_when_the_user_is_gone(user, monkeypatch):
    monkeypatch.setattr(wall, "WALL_INTERVAL_S", 0.05)
    communicator = await open_wall(user)
    await next_runs(communicator)
    user.is_active = False
    await user.asave()
    assert (await communicator.receive_output(timeout=2))["code"] == wall.CLOSE_UNAUTHENTICATED


def test_the_runs_page_loads_the_wall(client, user):
    from pathlib import Path

    client.force_login(user)
    assert "js/pages/run_list.js" in client.get("/runs/").content.decode()
    entry = Path(__file__).resolve().parents[2] / "static" / "js" / "pages" / "run_list.js"
    assert 'import { followRuns } from "../run_wall.js";' in entry.read_text()
