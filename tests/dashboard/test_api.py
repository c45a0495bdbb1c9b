"""The JSON API: auth, validation, ownership, the run lifecycle through HTTP."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.models import Run, RunStatus
from tests.support.factories import make_run
from tests.support.upstreams import Script, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def client_for(user, csrf=False):
    client = AsyncClient(enforce_csrf_checks=csrf)
    await sync_to_async(client.force_login)(user)
    return client


async def post_json(client, url, body, **headers):
    return await client.post(url, data=json.dumps(body), content_type="application/json", headers=headers)


async def wait_terminal(run_id):
    for _ in range(200):
        run = await Run.objects.aget(pk=run_id)
        if run.status not in ("queued", "streaming"):
            return run
        await asyncio.sleep(0.02)
    raise AssertionError("run did not finish")


async def test_anonymous_gets_json_401_everywhere():
    client = AsyncClient()
    for method, url in [("get", "/api/runs/"), ("post", "/api/runs/"), ("get", "/api/runs/1/"),
                        ("get", "/api/runs/1/events/"), ("post", "/api/runs/1/cancel/")]:
        response = await getattr(client, method)(url)
        assert response.status_code == 401, url
        assert response.json()["error"]["code"] == "not_authenticated"


async def test_create_stream_and_read_back(upstream, user):
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["Hi", " you"])))]))
    client = await client_for(user)
    response = await post_json(client, "/api/runs/", {"provider": "scripted", "model": "m", "input": "hello",
                                                      "instructions": "be brief", "params": {"temperature": 0.5}})
    assert response.status_code == 201
    created = response.json()
    assert created["status"] == "queued" and created["url"] == f"/runs/{created['id']}/"
    assert created["ws"] == f"/ws/runs/{created['id']}/"
    run = await wait_terminal(created["id"])
    assert run.status == RunStatus.COMPLETED
    assert run.request == {"model": "m", "input": "hello", "stream": True, "instructions": "be brief",
                           "temperature": 0.5}

    detail = (await client.get(f"/api/runs/{run.pk}/")).json()
    assert detail["status"] == "completed" and detail["output_text"] == "Hi you"
    assert detail["metrics"]["events"] == 5

    page = (await client.get(f"/api/runs/{run.pk}/events/?after=-1&limit=3")).json()
    assert [e["seq"] for e in page["events"]] == [0, 1, 2] and page["next_after"] == 2
    rest = (await client.get(f"/api/runs/{run.pk}/events/?after=2")).json()
    assert [e["seq"] for e in rest["events"]] == [3, 4] and rest["next_after"] is None
    assert rest["events"][0]["data"]["delta"] == " you"

    listing = (await client.get("/api/runs/")).json()
    assert [r["id"] for r in listing["runs"]] == [run.pk]


@pytest.mark.parametrize(
    "body, field",
    [
        ({"model": "m", "input": ""}, "input"),
        ({"model": "m"}, "input"),
        ({"provider": "nope", "model": "m", "input": "x"}, "provider"),
        ({"model": "m", "input": 5}, "input"),
        ({"model": "m", "input": "x", "params": {"temperature": "hot"}}, "params"),
        ({"model": "m", "input": "x", "params": {"max_output_tokens": 0}}, "params"),
        ({"model": "m", "input": "x", "params": {"api_key": "sneaky"}}, "params"),
        ({"model": "m", "input": "x", "params": [1]}, "params"),
        ({"model": "m" * 300, "input": "x"}, "model"),
    ],
)
async def test_bad_fields_get_a_clear_400(user, body, field):
    client = await client_for(user)
    response = await post_json(client, "/api/runs/", body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "invalid" and field in error["fields"]
    assert await Run.objects.acount() == 0


async def test_body_that_is_not_json(user):
    client = await client_for(user)
    response = await client.post("/api/runs/", data="{oops", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "bad_json"


async def test_writes_need_the_csrf_token(user):
    client = await client_for(user, csrf=True)
    response = await post_json(client, "/api/runs/", {"model": "m", "input": "x"})
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "csrf_failed"


async def test_other_peoples_runs_are_invisible(user, other_user, staff_user):
    run = await sync_to_async(make_run)(user, events=3)
    stranger = await client_for(other_user)
    for url in [f"/api/runs/{run.pk}/", f"/api/runs/{run.pk}/events/"]:
        response = await stranger.get(url)
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert (await post_json(stranger, f"/api/runs/{run.pk}/cancel/", {})).status_code == 404
    assert (await stranger.get("/api/runs/")).json()["runs"] == []
    staff = await client_for(staff_user)
    assert (await staff.get(f"/api/runs/{run.pk}/")).status_code == 200
    assert [r["id"] for r in (await staff.get("/api/runs/?all=1")).json()["runs"]] == [run.pk]


async def test_active_run_limit(user, settings):
    settings.STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER = 1
    await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    client = await client_for(user)
    response = await post_json(client, "/api/runs/", {"model": "sim-text", "input": "x"})
    assert response.status_code == 429 and response.json()["error"]["code"] == "too_many_active_runs"


async def test_cancel_an_orphaned_run_ends_it(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    client = await client_for(user)
    response = await post_json(client, f"/api/runs/{run.pk}/cancel/", {})
    assert response.status_code == 202
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED


async def test_events_paging_parameters_are_checked(user):
    run = await sync_to_async(make_run)(user, events=1)
    client = await client_for(user)
    for query in ["after=x", "limit=0", "limit=100000"]:
        response = await client.get(f"/api/runs/{run.pk}/events/?{query}")
        assert response.status_code == 400


async def test_unknown_api_route_is_json_404(user):
    client = await client_for(user)
    response = await client.get("/api/nothing-here/")
    assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"


async def test_a_run_cancelled_before_its_task_starts_still_ends(user):
    from streams.live.launcher import AsyncioLauncher

    run = await sync_to_async(make_run)(user, status=RunStatus.QUEUED)
    launcher = AsyncioLauncher()
    await launcher.launch(run.pk)
    assert await launcher.cancel(run.pk) is True  # before the task got to run a single line
    for _ in range(100):
        await asyncio.sleep(0.01)
        if (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED:
            break
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED
