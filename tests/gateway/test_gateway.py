"""The gateway in process (Django's async client) with the simulator over real HTTP as upstream:
bytes unchanged, every request a run, errors passed through, stops, recording failures."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from streams.models import Event, ModerationRule, Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]

URL = "/gateway/simulator/v1"


def auth(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def post(token: str, path: str, body: dict, **headers):
    return await AsyncClient().post(f"{URL}/{path}", json.dumps(body), content_type="application/json",
                                    headers={**auth(token), **headers})


async def read_all(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


async def direct(sim: str, path: str, body: dict) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(f"{sim}/{path}", json=body)


async def ended_run(run_id: int, timeout: float = 10.0) -> Run:
    # Polled with awaits: a sync loop would hold the one database thread the recorder writes on.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        run = await Run.objects.aget(pk=run_id)
        if run.status not in (RunStatus.QUEUED, RunStatus.STREAMING) or loop.time() > deadline:
            return run
        await asyncio.sleep(0.05)


@sync_to_async
def events_of(run_id: int) -> list[tuple[int, str, str]]:
    return list(Event.objects.filter(run_id=run_id).order_by("seq").values_list("seq", "type", "data"))


def data_lines(raw: bytes) -> list[str]:
    return [line[len("data: "):] for line in raw.decode().splitlines() if line.startswith("data: ")]


SEEDED = {"model": "sim-text", "input": "Why is the sky blue?", "stream": True,
          "metadata": {"sim_seed": "7", "sim_tokens_per_s": "max"}}


async def test_a_stream_passes_unchanged_and_is_recorded_as_a_gateway_run(sim_upstream, token, user):
    response = await post(token, "responses", SEEDED)
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    got = await read_all(response)
    want = (await direct(sim_upstream, "responses", SEEDED)).content
    assert got == want  # same seed, same bytes: the gateway changed none of them
    run = await ended_run(int(response["x-streamscope-run"]))
    assert (run.source, run.status, run.owner_id, run.provider, run.model) == (
        "gateway", "completed", user.pk, "simulator", "sim-text")
    assert run.request == SEEDED and run.error is None
    stored = await events_of(run.pk)
    assert [seq for seq, _, _ in stored] == list(range(len(stored)))
    assert [data for _, _, data in stored] == data_lines(got)  # every event, exactly as received
    assert run.output_text and run.metrics["event_count"] == len(stored) if "event_count" in run.metrics else True


async def test_a_non_streamed_answer_passes_whole_and_is_one_recorded_body(sim_upstream, token):
    body = {**SEEDED, "stream": False}
    response = await post(token, "responses", body)
    assert response.status_code == 200 and response["Content-Type"].startswith("application/json")
    answer = json.loads(response.content)
    assert answer["object"] == "response" and answer["status"] == "completed"
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "completed" and run.response_id == answer["id"] and run.output_text
    assert [(t, d) for _, t, d in await events_of(run.pk)] == [("streamscope.response_body", response.content.decode())]


async def test_chat_completions_stream_is_recorded(sim_upstream, token):
    body = {"model": "sim-text", "messages": [{"role": "user", "content": "hi"}], "stream": True,
            "metadata": {"sim_tokens_per_s": "max"}}
    response = await post(token, "chat/completions", body)
    raw = await read_all(response)
    assert raw.rstrip().endswith(b"data: [DONE]")
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "completed" and run.output_text
    types = {t for _, t, _ in await events_of(run.pk)}
    assert "chat.completion.chunk" in types


@pytest.mark.parametrize("model, status", [("sim-http-429", 429), ("sim-http-400", 400), ("sim-http-500", 500)])
async def test_http_errors_pass_through_with_status_body_and_headers(sim_upstream, token, model, status):
    body = {"model": model, "input": "hi", "stream": True}
    response = await post(token, "responses", body)
    want = await direct(sim_upstream, "responses", body)
    assert response.status_code == want.status_code == status
    assert json.loads(response.content)["error"] == want.json()["error"]
    assert response["x-request-id"]
    if status == 429:
        assert response["retry-after"] == want.headers["retry-after"]
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "failed" and run.error["http_status"] == status and run.error["code"] == "http_error"


async def test_models_pass_through_without_a_run(sim_upstream, token):
    response = await AsyncClient().get(f"{URL}/models", headers=auth(token))
    assert response.status_code == 200 and any(m["id"] == "sim-text" for m in json.loads(response.content)["data"])
    assert await Run.objects.acount() == 0


@pytest.mark.parametrize("header", [None, "Bearer ssk_unknown", "Bearer sk-openai-key", "Basic eA=="])
async def test_without_a_valid_token_the_answer_is_an_openai_401(sim_upstream, header):
    headers = {"Authorization": header} if header else {}
    response = await AsyncClient().post(f"{URL}/responses", json.dumps(SEEDED), content_type="application/json",
                                        headers=headers)
    assert response.status_code == 401
    error = json.loads(response.content)["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
    assert await Run.objects.acount() == 0


async def test_a_revoked_token_stops_working_at_once(sim_upstream, token, user):
    from dashboard.models import ApiToken

    assert (await AsyncClient().get(f"{URL}/models", headers=auth(token))).status_code == 200
    await ApiToken.objects.filter(owner=user).aupdate(revoked_at="2026-01-01T00:00:00Z")
    assert (await AsyncClient().get(f"{URL}/models", headers=auth(token))).status_code == 401


async def test_unknown_provider_and_path_are_openai_404s(sim_upstream, token):
    # Ids of "." or ".." would climb the upstream's URL with the provider's key: not routes at all.
    for url in ("/gateway/nope/v1/models", f"{URL}/files", f"{URL}/models/..", f"{URL}/responses/./cancel"):
        response = await AsyncClient().get(url, headers=auth(token))
        assert response.status_code == 404 and json.loads(response.content)["error"]["message"]


async def test_stop_in_the_dashboard_ends_the_clients_stream_with_an_error_event(sim_upstream, token):
    from streams.live.control import cancel_run

    # The upstream holds after six events, past the gateway's stall timeout (60 s): the stream cannot
    # end before the Stop, however late this test gets the CPU (at 20 tokens a second it lasted ~5 s).
    body = {"model": "sim-text", "input": "hi " * 50, "stream": True,
            "metadata": {"sim_tokens_per_s": "20", "sim_stall_after": "6"}}
    response = await post(token, "responses", body)
    run_id = int(response["x-streamscope-run"])
    chunks = aiter(response.streaming_content)
    first = await anext(chunks)
    assert b"response.created" in first
    await cancel_run(await Run.objects.aget(pk=run_id))
    rest = b"".join([chunk async for chunk in chunks])
    last = rest.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])["error"]
    assert error["code"] == "cancelled_by_user"
    run = await ended_run(run_id)
    assert run.status == "cancelled"


async def test_a_moderation_stop_rule_stops_a_gateway_stream(sim_upstream, token):
    await ModerationRule.objects.acreate(name="no sky", kind="keywords", patterns="sky", action="stop")
    body = {"model": "sim-text", "input": "Why is the sky blue?", "stream": True,
            "metadata": {"sim_tokens_per_s": "200"}}
    response = await post(token, "responses", body)
    raw = await read_all(response)
    last = raw.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error")
    assert json.loads(last.split(b"data: ", 1)[1])["error"]["code"] == "moderation_stopped"
    assert b"response.completed" not in raw
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "cancelled" and run.error["code"] == "moderation_stopped"


async def test_when_the_database_fails_the_client_still_gets_every_byte(sim_upstream, token, monkeypatch):
    from streams.pipeline import store

    real, calls = store.write_batch, {"n": 0}

    async def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] <= 3:
            raise RuntimeError("database is down")
        return await real(*args, **kwargs)

    monkeypatch.setattr(store, "write_batch", flaky)
    body = {**SEEDED, "metadata": {"sim_seed": "7", "sim_tokens_per_s": "400"}}
    response = await post(token, "responses", body)
    got = await read_all(response)
    assert got == (await direct(sim_upstream, "responses", body)).content
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "completed"
    assert run.error["code"] == "recording_retried" and "database is down" in run.error["message"]
    stored = await events_of(run.pk)
    assert [data for _, _, data in stored] == data_lines(got)  # kept in memory and written later


async def test_when_the_channel_layer_fails_the_client_still_gets_every_byte(sim_upstream, token, monkeypatch):
    import streams.gateway.recorder as gateway_recorder
    import streams.live.recorder as live_recorder

    async def broken(*args, **kwargs):
        raise ConnectionError("redis is down")

    for module in (live_recorder, gateway_recorder):
        monkeypatch.setattr(module, "publish_status", broken)
    monkeypatch.setattr(live_recorder, "publish_events", broken)
    response = await post(token, "responses", SEEDED)
    got = await read_all(response)
    assert got == (await direct(sim_upstream, "responses", SEEDED)).content
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "completed" and len(await events_of(run.pk)) == len(data_lines(got))
    assert "viewers" in run.error["message"]


async def test_a_recording_bug_does_not_cut_the_clients_stream(sim_upstream, token, monkeypatch):
    from streams.gateway.recorder import GatewayRecorder

    def broken(self, frame, t):
        raise ValueError("bug")

    monkeypatch.setattr(GatewayRecorder, "accept_frame", broken)
    response = await post(token, "responses", SEEDED)
    got = await read_all(response)
    assert got == (await direct(sim_upstream, "responses", SEEDED)).content
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.error["code"] == "recording_incomplete"


async def test_the_run_is_visible_to_its_owner_only(sim_upstream, token, other_user):
    from dashboard.tokens import issue_token

    response = await post(token, "responses", SEEDED)
    await read_all(response)
    run_id = int(response["x-streamscope-run"])
    await ended_run(run_id)
    mine = await AsyncClient().get(f"/api/runs/{run_id}/", headers=auth(token))
    assert json.loads(mine.content)["source"] == "gateway"
    _, other = await sync_to_async(issue_token)(other_user)
    assert (await AsyncClient().get(f"/api/runs/{run_id}/", headers=auth(other))).status_code == 404
    listed = json.loads((await AsyncClient().get("/api/runs/?source=gateway", headers=auth(other))).content)
    assert listed["runs"] == []


async def test_an_input_stop_rule_refuses_the_request_before_it_is_sent(sim_upstream, token):
    await ModerationRule.objects.acreate(name="secret", kind="keywords", patterns="launch codes", scope="input",
                                         action="stop")
    response = await post(token, "responses", {"model": "sim-text", "input": "the launch codes", "stream": True})
    assert response.status_code == 400
    assert json.loads(response.content)["error"]["code"] == "moderation_stopped"
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "cancelled"
    await asyncio.sleep(0)


async def test_a_stop_for_a_run_relayed_by_another_process_goes_over_the_channel_layer():
    from streams.live import stoppers

    stopped = asyncio.Event()
    reasons = []

    def stop(reason):
        reasons.append(reason)
        stopped.set()

    stoppers.register(987654, stop)
    try:
        await asyncio.sleep(0.05)  # the listener joins its group
        await stoppers.request_stop(987654, "stopped in the dashboard")
        await asyncio.wait_for(stopped.wait(), 5)
    finally:
        stoppers.unregister(987654)
    assert reasons == ["stopped in the dashboard"]
    assert not stoppers.stop_here(987654, "again")


async def test_a_stream_whose_body_is_never_asked_for_ends_cancelled(sim_upstream, token, monkeypatch):
    from streams.gateway import proxy

    monkeypatch.setattr(proxy, "UNSTARTED_BODY_S", 0.2)
    body = {"model": "sim-text", "input": "hi", "stream": True, "metadata": {"sim_tokens_per_s": "20"}}
    response = await post(token, "responses", body)  # the body is never read: the client "left"
    run = await ended_run(int(response["x-streamscope-run"]))
    assert run.status == "cancelled" and run.error["code"] == "client_disconnected"
