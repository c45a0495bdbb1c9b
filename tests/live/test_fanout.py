"""Fan-out groups: POST /api/groups/ starts every variant as a run; groups are listed and owned."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.live.fanout import Variant
from streams.models import Run, RunGroup
from tests.support.upstreams import Script, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def client_for(user):
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    return client


async def post_group(client, body):
    return await client.post("/api/groups/", data=json.dumps(body), content_type="application/json")


async def wait_all_terminal(ids):
    for _ in range(300):
        statuses = [s async for s in Run.objects.filter(pk__in=ids).values_list("status", flat=True)]
        if all(s not in ("queued", "streaming") for s in statuses):
            return statuses
        await asyncio.sleep(0.02)
    raise AssertionError("runs did not finish")


async def test_fan_out_starts_every_variant_and_saves_the_group(upstream, user):
    for words in (["a", "b"], ["c"], ["d", "e", "f"]):
        upstream.scripts.append(Script(steps=[(0.05, sse(*text_stream(words)))]))
    client = await client_for(user)
    response = await post_group(client, {
        "input": "same prompt", "instructions": "be brief",
        "variants": [
            {"provider": "scripted", "model": "m1", "params": {"temperature": 0.2}},
            {"provider": "scripted", "model": "m2", "instructions": "be verbose", "label": "verbose"},
            {"provider": "scripted", "model": "m1", "instructions": ""},
        ],
    })
    assert response.status_code == 201, response.content
    group = response.json()
    ids = [r["id"] for r in group["runs"]]
    assert len(ids) == 3 and [r["label"] for r in group["runs"]] == ["scripted/m1 · t=0.2", "verbose", "scripted/m1"]
    assert group["compare_url"] == f"/compare/?runs={','.join(map(str, ids))}&group={group['id']}"
    assert await wait_all_terminal(ids) == ["completed"] * 3
    runs = {run.pk: run async for run in Run.objects.filter(pk__in=ids)}
    assert [runs[i].request.get("instructions") for i in ids] == ["be brief", "be verbose", None]
    assert runs[ids[0]].request["temperature"] == 0.2
    assert all(runs[i].request["input"] == "same prompt" for i in ids)
    # Every variant really went upstream.
    assert sorted(json.loads(r["body"])["model"] for r in upstream.requests) == ["m1", "m1", "m2"]

    detail = (await client.get(f"/api/groups/{group['id']}/")).json()
    assert [r["id"] for r in detail["runs"]] == ids and detail["input"] == "same prompt"
    listing = (await client.get("/api/groups/")).json()
    assert [g["id"] for g in listing["groups"]] == [group["id"]]
    compare = (await client.get(f"/api/compare/?group={group['id']}")).json()
    assert [r["id"] for r in compare["runs"]] == ids


async def test_groups_are_private(upstream, user, other_user):
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["x"])))]))
    client = await client_for(user)
    group = (await post_group(client, {"input": "mine", "variants": [{"provider": "scripted", "model": "m"}]})).json()
    await wait_all_terminal([group["runs"][0]["id"]])
    stranger = await client_for(other_user)
    assert (await stranger.get(f"/api/groups/{group['id']}/")).status_code == 404
    assert (await stranger.get("/api/groups/")).json()["groups"] == []
    assert (await AsyncClient().get("/api/groups/")).status_code == 401


@pytest.mark.parametrize(("body", "message"), [
    ({"input": "x", "variants": []}, "variants must be a list of 1 to 4"),
    ({"input": "x", "variants": [{"provider": "scripted", "model": "m"}] * 5}, "variants must be a list of 1 to 4"),
    ({"input": "", "variants": [{"provider": "scripted", "model": "m"}]}, "input is empty"),
    ({"input": "x", "variants": [{"provider": "nope", "model": "m"}]}, "variant 1: unknown provider"),
    ({"input": "x", "variants": [{"provider": "scripted", "model": "m"}, {"provider": "scripted", "model": "m",
                                                                        "params": {"bogus": 1}}]}, "variant 2"),
    ({"input": "x", "variants": ["m"]}, "variant 1 must be a JSON object"),
])
async def test_bad_groups_are_refused_and_nothing_starts(upstream, user, body, message):
    client = await client_for(user)
    response = await post_group(client, body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]
    assert await Run.objects.acount() == 0 and await RunGroup.objects.acount() == 0


async def test_the_active_run_limit_counts_the_whole_group(upstream, user, settings):
    settings.STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER = 2
    client = await client_for(user)
    variants = [{"provider": "scripted", "model": "m"}] * 3
    response = await post_group(client, {"input": "x", "variants": variants})
    assert response.status_code == 429 and response.json()["error"]["code"] == "too_many_active_runs"
    assert await Run.objects.acount() == 0


async def test_writes_need_csrf(upstream, user):
    client = AsyncClient(enforce_csrf_checks=True)
    await sync_to_async(client.force_login)(user)
    response = await post_group(client, {"input": "x", "variants": [{"provider": "scripted", "model": "m"}]})
    assert response.status_code == 403


def test_variant_labels():
    assert Variant("simulator", "sim-text").describe() == "sim-text"
    assert Variant("openai", "gpt-5", "Answer in French.\nAlways.", {"temperature": 0.7}).describe() == \
        "openai/gpt-5 · t=0.7 · “Answer in French.”"
    assert Variant("simulator", "sim-text", label="mine").describe() == "mine"
