"""Hostile input at the edges: lone surrogates, digit-like characters, ids beyond 64 bits, NaN and
overflowing numbers, JSON nested thousands deep, oversized bodies, JSONL records whose data would
break the JSON answers they are spliced into. Every one gets a clear 4xx and loses nothing."""

import json

import pytest
from django.test import Client

from streams.history.import_formats import parse_stream
from streams.models import Event, ModerationRule, Run, RunStatus, Verdict

pytestmark = pytest.mark.django_db

SURROGATE_BODY = '{"provider": "simulator", "model": "sim-text", "input": "a\\ud800b", "instructions": "x\\udc00"}'
DEEP = "[" * 5000 + "]" * 5000


@pytest.fixture(autouse=True)
def _never_execute(no_execution):
    """Runs are created but never executed (tests/conftest.py): only the edges are under test."""


@pytest.fixture
def staff_client(admin_user):
    client = Client()
    client.force_login(admin_user)
    return client


@pytest.fixture
def user_client(user):
    client = Client()
    client.force_login(user)
    return client


def post_json(client, url, body, **extra):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data=data, content_type="application/json", **extra)


def stored_run(owner, **fields):
    values = {"provider": "simulator", "model": "sim-text", "status": RunStatus.COMPLETED,
              "request": {"model": "sim-text", "input": "hi"}}
    values.update(fields)
    return Run.objects.create(owner=owner, **values)


def test_a_lone_surrogate_in_the_api_body_is_replaced_at_the_edge(user_client, user):
    response = post_json(user_client, "/api/runs/", SURROGATE_BODY)
    assert response.status_code == 201, response.content
    run = Run.objects.get(pk=response.json()["id"])
    assert run.request["input"] == "a\ufffdb"
    assert run.request["instructions"] == "x\ufffd"


def test_pages_exports_and_admin_survive_a_surrogate_stored_earlier(staff_client, admin_user):
    # As a run stored before the edges cleaned input: SQLite keeps the JSON escape, reading it
    # back gives a string UTF-8 cannot encode.
    run = stored_run(admin_user, request={"model": "sim-text", "input": "a\ud800b", "instructions": "\udc00"},
                     error={"message": "bad \ud800"})
    Event.objects.create(run=run, seq=0, t=0.0, type="response.completed", data='{"type":"response.completed"}')
    urls = ["/runs/", "/runs/?all=1", f"/runs/{run.pk}/", f"/runs/{run.pk}/replay/", f"/compare/?runs={run.pk}",
            f"/review/?run={run.pk}", "/review/", "/admin/streams/run/", f"/admin/streams/run/{run.pk}/change/",
            f"/api/runs/{run.pk}/", "/api/runs/?all=1"]
    for url in urls:
        response = staff_client.get(url)
        assert response.status_code == 200, (url, response.status_code)
    export = staff_client.get(f"/runs/{run.pk}/export.jsonl")
    body = _read_streaming(export).decode("utf-8")
    assert json.loads(body.splitlines()[0])["run"]["request"]["input"] == "a\ufffdb"


@pytest.mark.parametrize("params", ['{"temperature": NaN}', '{"temperature": 1e999}', '{"metadata": ' + DEEP + "}",
                                    '{"temperature": Infinity}'])
def test_unrepresentable_params_get_a_400(user_client, params):
    body = '{"provider": "simulator", "model": "sim-text", "input": "hi", "params": ' + params + "}"
    response = post_json(user_client, "/api/runs/", body)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["message"]
    assert not Run.objects.exists()


def test_input_nested_thousands_deep_gets_a_400(user_client):
    response = post_json(user_client, "/api/runs/",
                         '{"provider": "simulator", "model": "sim-text", "input": ' + DEEP + "}")
    assert response.status_code == 400
    assert not Run.objects.exists()


def test_the_simulator_refuses_a_body_nested_thousands_deep(user_client):
    response = post_json(user_client, "/sim/v1/responses", '{"model": "sim-text", "input": ' + DEEP + "}")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_params_have_a_size_cap(user_client):
    body = {"provider": "simulator", "model": "sim-text", "input": "hi", "params": {"metadata": {"k": "x" * 400_000}}}
    response = post_json(user_client, "/api/runs/", body)
    assert response.status_code == 400
    assert "limit" in response.json()["error"]["message"]


def test_an_oversized_body_gets_a_json_413(user_client, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024 * 1024
    response = post_json(user_client, "/api/runs/", b'{"input": "' + b"x" * (2 * 1024 * 1024) + b'"}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "body_too_large"


@pytest.mark.parametrize("query", ["runs=\u00b2", "runs=99999999999999999999", "runs=1,\u0663", "group=\u00b2",
                                   "group=99999999999999999999"])
def test_compare_refuses_what_is_not_an_id(user_client, query):
    assert user_client.get(f"/compare/?{query}").status_code == 400
    response = user_client.get(f"/api/compare/?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "bad_request"


@pytest.mark.parametrize("query", ["page=99999999999999999999", "page=\u00b2", "page=0"])
def test_the_run_list_api_refuses_a_bad_page(user_client, query):
    response = user_client.get(f"/api/runs/?{query}")
    assert response.status_code == 400
    assert "page" in response.json()["error"]["message"]


@pytest.mark.parametrize("query", ["after=\u00b2", "limit=99999999999999999999", "after=99999999999999999999"])
def test_the_events_api_refuses_a_bad_number(user_client, user, query):
    run = stored_run(user)
    assert user_client.get(f"/api/runs/{run.pk}/events/?{query}").status_code == 400


@pytest.mark.parametrize("query", ["run=\u00b2", "run=99999999999999999999"])
def test_the_review_page_answers_404_for_an_id_that_is_not_one(staff_client, query):
    assert staff_client.get(f"/review/?{query}").status_code == 404


@pytest.mark.parametrize("rule", ["\u00b2", "99999999999999999999"])
def test_review_and_admin_filters_refuse_a_bad_rule(staff_client, rule):
    assert staff_client.get(f"/review/?rule={rule}").status_code == 400
    assert staff_client.get(f"/admin/streams/run/?rule={rule}").status_code in (200, 302)


def test_a_verdict_with_a_bad_rule_filter_is_refused_before_anything_is_written(staff_client, admin_user):
    run = stored_run(admin_user)
    response = staff_client.post(f"/review/{run.pk}/verdict/", {"verdict": "approved", "rule": "\u00b2"})
    assert response.status_code == 400
    assert not Verdict.objects.exists()
    ModerationRule.objects.create(name="r", kind="keywords", patterns="x")
    response = staff_client.post(f"/review/{run.pk}/verdict/", {"verdict": "approved", "rule": "99999999999999999999"})
    assert response.status_code == 400
    assert not Verdict.objects.exists()


def test_a_list_as_replay_speed_is_a_400(user_client, user):
    run = stored_run(user)
    response = post_json(user_client, f"/replay/{run.pk}/v1/responses",
                         {"stream": True, "metadata": {"replay_speed": [2]}}, headers={"X-CSRFToken": "unused"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "speed"


def test_an_exception_in_an_api_view_is_json_even_with_debug_on(user_client, settings, monkeypatch):
    settings.DEBUG = True

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr("dashboard.api.runs.get_providers", broken)
    response = user_client.get("/api/providers/")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == "internal_error"
    assert b"boom" not in response.content


JSONL_HEADER = '{"streamscope": 1, "run": {"status": "completed"}}'


@pytest.mark.parametrize("data", [
    '{"type":"response.output_text.delta","delta":"a"}]},{"seq":999,"t":0,"type":"x","data":{"forged":true}',
    "not json at all",
    '{"a": 1} {"b": 2}',
    "",
])
def test_a_jsonl_record_whose_data_is_not_one_json_value_is_kept_as_a_malformed_event(data):
    record = json.dumps({"seq": 0, "t": 1.5, "type": "response.output_text.delta", "data": data})
    parsed = parse_stream((JSONL_HEADER + "\n" + record + "\n").encode())
    [event] = parsed.events
    assert event.type == "streamscope.malformed"
    assert json.loads(event.data)["raw"] == data


def test_imported_events_answer_valid_json_with_no_forged_event(user_client, user):
    forged = '{"type":"response.output_text.delta","delta":"a"}]},{"seq":999,"t":0,"type":"x","data":{"forged":1}'
    lines = [JSONL_HEADER,
             json.dumps({"seq": 0, "t": 0, "type": "response.created", "data": '{"type":"response.created"}'}),
             json.dumps({"seq": 1, "t": 1, "type": "response.output_text.delta", "data": forged})]
    response = user_client.post("/runs/import/", {"file": _upload("\n".join(lines) + "\n")})
    assert response.status_code == 302
    run = Run.objects.get()
    answer = user_client.get(f"/api/runs/{run.pk}/events/")
    events = json.loads(answer.content)["events"]
    assert [event["seq"] for event in events] == [0, 1]
    assert events[1]["type"] == "streamscope.malformed"


def _upload(text):
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("run.jsonl", text.encode(), content_type="application/x-ndjson")


def _read_streaming(response):
    from asgiref.sync import async_to_sync

    async def collect():
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(collect)()
