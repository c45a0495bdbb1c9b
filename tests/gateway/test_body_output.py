"""A non-streamed gateway answer, recorded as its one ``streamscope.response_body`` event, rebuilds
into the output its run's row and the client have: the admin's run page, and a JSONL export
imported back, show its items (issue 12, item 4). The browser's twin is held to this rebuild by
tests/protocol/test_output_model.py, and drawn on the run page in tests/e2e/test_gateway_body.py."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from streams.admin import run_review_context
from streams.history.export import export_jsonl
from streams.history.importer import import_stream
from streams.protocol.rebuild import RESPONSE_BODY, rebuild_output
from tests.gateway.test_gateway import ended_run, events_of, post

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]

FAST = {"sim_seed": "7", "sim_tokens_per_s": "max"}


async def rebuilt_run(response):
    run = await ended_run(int(response["x-streamscope-run"]))
    stored = await events_of(run.pk)
    assert [event_type for _, event_type, _ in stored] == [RESPONSE_BODY]
    return run, rebuild_output((event_type, json.loads(data)) for _, event_type, data in stored)


@pytest.mark.parametrize("model", ["sim-text", "sim-function-calls", "sim-reasoning-summary", "sim-refusal"])
async def test_a_whole_response_rebuilds_into_its_output_items(sim_upstream, token, model):
    response = await post(token, "responses", {"model": model, "input": "hi", "metadata": FAST})
    answer = json.loads(response.content)
    run, rebuilt = await rebuilt_run(response)
    assert [item.type for item in rebuilt.items] == [item["type"] for item in answer["output"]]
    assert [item.item for item in rebuilt.items] == answer["output"]
    assert rebuilt.output_text == run.output_text
    assert (rebuilt.status, rebuilt.response_id, rebuilt.usage) == ("completed", answer["id"], answer["usage"])
    assert not rebuilt.mismatches
    assert run.metrics["output_tokens"] == answer["usage"]["output_tokens"]  # compare's and the list's figure
    assert run.metrics["output_tokens_estimated"] is False
    if model == "sim-function-calls":
        calls = [(item.item["name"], item.item["arguments"]) for item in rebuilt.items if item.type == "function_call"]
        wanted = [(o["name"], o["arguments"]) for o in answer["output"] if o["type"] == "function_call"]
        assert calls and calls == wanted


async def test_a_whole_chat_completion_rebuilds_into_its_message_and_tool_calls(sim_upstream, token):
    for model in ("sim-text", "sim-function-calls"):
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False, "metadata": FAST}
        response = await post(token, "chat/completions", body)
        answer = json.loads(response.content)
        run, rebuilt = await rebuilt_run(response)
        message = answer["choices"][0]["message"]
        assert rebuilt.format == "chat" and rebuilt.status == run.status == "completed"
        assert rebuilt.output_text == run.output_text == (message["content"] or "")
        calls = [(item.item["name"], item.item["arguments"]) for item in rebuilt.items if item.type == "function_call"]
        assert calls == [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls") or []]
        assert rebuilt.usage == answer["usage"]
        assert run.metrics["output_tokens"] == answer["usage"]["completion_tokens"]


async def test_a_background_requests_queued_answer_rebuilds_as_a_snapshot_without_an_end(sim_upstream, token):
    response = await post(token, "responses", {"model": "sim-text", "input": "hi", "background": True,
                                               "metadata": FAST})
    answer = json.loads(response.content)
    assert answer["status"] in ("queued", "in_progress")
    run, rebuilt = await rebuilt_run(response)
    assert run.status == "completed"  # the request was; the response goes on elsewhere
    assert (rebuilt.items, rebuilt.status, rebuilt.response_id) == ([], None, answer["id"])


async def test_the_admin_run_page_and_a_jsonl_round_trip_show_a_whole_answers_items(sim_upstream, token, user):
    response = await post(token, "responses", {"model": "sim-function-calls", "input": "hi", "metadata": FAST})
    answer = json.loads(response.content)
    run, _ = await rebuilt_run(response)

    @sync_to_async
    def admin_items_and_imported():
        items = [(item["type"], item["text"]) for item in run_review_context(run, None)["rebuilt_items"]]
        imported = import_stream("".join(export_jsonl(run)).encode(), owner=user, filename="body.jsonl")
        return items, imported, [note for note in imported.import_notes if note.startswith("rebuild:")]

    items, imported, rebuild_notes = await admin_items_and_imported()
    assert [kind for kind, _ in items] == [item["type"] for item in answer["output"]]
    assert any(kind == "function_call" and text for kind, text in items)
    assert imported.output_text == run.output_text and imported.status == "completed"
    assert rebuild_notes == []


async def test_a_whole_answer_replays_as_itself_and_refuses_a_stream_it_never_had(sim_upstream, token, user):
    from django.test import AsyncClient

    client = AsyncClient()
    await client.aforce_login(user)
    answer_response = await post(token, "responses", {"model": "sim-text", "input": "hi", "metadata": FAST})
    answer = json.loads(answer_response.content)
    run, _ = await rebuilt_run(answer_response)
    url = f"/replay/{run.pk}/v1/responses"
    replayed = await client.post(url, {"stream": False}, content_type="application/json")
    assert replayed.status_code == 200 and replayed.json() == answer
    streamed = await client.post(url, {"stream": True}, content_type="application/json")
    assert streamed.status_code == 400 and streamed.json()["error"]["code"] == "not_streamed"

    chat_response = await post(token, "chat/completions", {"model": "sim-text", "stream": False, "metadata": FAST,
                                                           "messages": [{"role": "user", "content": "hi"}]})
    chat_run, _ = await rebuilt_run(chat_response)
    refused = await client.post(f"/replay/{chat_run.pk}/v1/responses", {"stream": False},
                                content_type="application/json")
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "not_a_response"


async def test_a_whole_answers_sse_download_is_the_json_that_came(sim_upstream, token, user):
    from django.test import AsyncClient

    client = AsyncClient()
    await client.aforce_login(user)
    answer_response = await post(token, "responses", {"model": "sim-function-calls", "input": "hi", "metadata": FAST})
    run, _ = await rebuilt_run(answer_response)
    download = await client.get(f"/runs/{run.pk}/export.sse")
    assert download.status_code == 200 and download["Content-Type"].startswith("application/json")
    assert download["Content-Disposition"] == f'attachment; filename="run-{run.pk}.json"'
    assert download.content == answer_response.content


async def test_the_export_command_gives_a_whole_answer_as_the_download_does(sim_upstream, token):
    from io import StringIO

    from django.core.management import call_command

    answer_response = await post(token, "responses", {"model": "sim-text", "input": "hi", "metadata": FAST})
    run, _ = await rebuilt_run(answer_response)
    out = StringIO()
    await sync_to_async(call_command)("export_run", str(run.pk), stdout=out)
    assert out.getvalue().encode() == answer_response.content
