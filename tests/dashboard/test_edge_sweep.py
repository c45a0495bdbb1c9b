"""A property-based sweep over every URL parameter and JSON field the pages and the API read, and
over every import format: whatever arrives, no answer is a 500 and none hangs (the bound below is
a hang detector, generous on purpose: a normal answer takes milliseconds)."""

import json
import time
from urllib.parse import urlencode

import pytest
from django.test import Client
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.history.import_formats import ImportFailed, parse_stream
from streams.models import Run, RunStatus

# `slow`: tens of seconds of requests in process; `make test` runs it, `make test-fast` does not.
pytestmark = [pytest.mark.django_db, pytest.mark.slow]

HANG_S = 10.0
TRICKY = ["\u00b2", "\u0663", "-1", "0", "1e3", "99999999999999999999", "NaN", "Infinity", "max", " 7 ", "1,2,3,4,5",
          "", ",", "\x00", "\ud7ff", "a" * 300, "[1]", "{}", "0x10", "+5", "5.5"]
values = st.one_of(st.sampled_from(TRICKY), st.text(max_size=40), st.integers().map(str))
SWEEP = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                       HealthCheck.too_slow])


@pytest.fixture(autouse=True)
def _never_execute(no_execution):
    """Runs are created but never executed (tests/conftest.py): only the edges are under test."""


@pytest.fixture
def people(django_user_model, admin_user):
    owner = django_user_model.objects.create_user("sweep-owner", password="pw-sweep-1")
    run = Run.objects.create(owner=owner, provider="simulator", model="sim-text", status=RunStatus.COMPLETED,
                             request={"model": "sim-text", "input": "hi"})
    clients = []
    for user in (owner, admin_user):
        client = Client()
        client.force_login(user)
        clients.append(client)
    return run, clients


def get_ok(client, path, params):
    started = time.monotonic()
    response = client.get(path + "?" + urlencode(params))
    assert time.monotonic() - started < HANG_S, (path, params)
    assert response.status_code < 500, (path, params, response.status_code)
    return response


PAGES = {
    "/api/runs/": ["page", "all"],
    "/api/runs/{run}/events/": ["after", "limit"],
    "/api/compare/": ["runs", "group"],
    "/api/groups/": ["all"],
    "/runs/": ["page", "all"],
    "/compare/": ["runs", "group"],
    "/review/": ["run", "rule", "model", "flagged"],
    "/runs/{run}/replay/": ["speed"],
    "/admin/streams/run/": ["rule", "q", "o", "p", "status__exact"],
}


@pytest.mark.parametrize("path", sorted(PAGES))
def test_no_url_parameter_makes_a_500(people, path):
    run, clients = people
    names = PAGES[path]

    @SWEEP
    @given(st.fixed_dictionaries({}, optional=dict.fromkeys(names, values)))
    def sweep(params):
        for client in clients:
            get_ok(client, path.format(run=run.pk), params)

    sweep()


json_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                        st.text(max_size=20), st.sampled_from(TRICKY))
json_values = st.recursive(json_leaves, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
PARAM_NAMES = ["temperature", "top_p", "max_output_tokens", "top_logprobs", "background", "store", "metadata",
               "tools", "include", "reasoning", "text", "tool_choice", "unknown"]
run_bodies = st.fixed_dictionaries({}, optional={
    "provider": st.one_of(st.just("simulator"), json_values),
    "model": st.one_of(st.just("sim-text"), json_values),
    "input": st.one_of(st.text(max_size=30), json_values),
    "instructions": json_values,
    "params": st.one_of(st.dictionaries(st.sampled_from(PARAM_NAMES), json_values, max_size=4), json_values),
})


def post_ok(client, path, body):
    started = time.monotonic()
    raw = body if isinstance(body, str) else json.dumps(body)
    response = client.post(path, data=raw, content_type="application/json")
    assert time.monotonic() - started < HANG_S, (path, body)
    assert response.status_code < 500, (path, body, response.status_code, response.content[:300])
    assert response["Content-Type"].startswith("application/json"), (path, body)


def test_no_run_body_makes_a_500(people):
    _run, clients = people

    @SWEEP
    @given(run_bodies)
    def sweep(body):
        post_ok(clients[0], "/api/runs/", body)

    sweep()


def test_no_group_body_makes_a_500(people):
    _run, clients = people
    bodies = st.fixed_dictionaries({}, optional={"input": json_values, "instructions": json_values,
                                                 "variants": st.one_of(st.lists(run_bodies, max_size=5), json_values)})

    @SWEEP
    @given(bodies)
    def sweep(body):
        post_ok(clients[0], "/api/groups/", body)

    sweep()


def test_no_replay_body_makes_a_500(people):
    run, clients = people
    bodies = st.fixed_dictionaries({}, optional={"stream": json_values, "metadata": st.one_of(
        st.fixed_dictionaries({}, optional={"replay_speed": json_values}), json_values)})

    @SWEEP
    @given(bodies)
    def sweep(body):
        response = clients[0].post(f"/replay/{run.pk}/v1/responses", data=json.dumps(body),
                                   content_type="application/json")
        assert response.status_code < 500, (body, response.status_code)
        if hasattr(response, "streaming_content"):
            response.close()

    sweep()


@pytest.mark.parametrize("raw", ["NaN", "[" * 3000, "{" * 3000, '{"a": 1e999}', "\ufeff{}", '"\\ud800"', "{}" * 1000])
def test_malformed_json_bodies_get_a_json_400(people, raw):
    _run, clients = people
    for path in ("/api/runs/", "/api/groups/"):
        response = clients[0].post(path, data=raw, content_type="application/json")
        assert 400 <= response.status_code < 500
        assert response.json()["error"]["message"]


# --- every import format -----------------------------------------------------------------------

def assert_spliceable(content: bytes):
    try:
        parsed = parse_stream(content)
    except ImportFailed:
        return
    for event in parsed.events:
        json.loads(event.data)  # spliced raw into API answers and frames: must be one JSON value
        event.data.encode("utf-8")
        event.type.encode("utf-8")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_import_or_fail_cleanly(content):
    assert_spliceable(content)


sse_lines = st.lists(st.one_of(
    st.builds(lambda v: "data: " + json.dumps(v), json_values),
    st.builds(lambda s: "data: " + s, st.text(max_size=30)),
    st.sampled_from(["data: [DONE]", "event: response.created", ": comment", "id: 7", "retry: 10", "",
                     'data: {"type": "response.output_text.delta", "delta": "\\ud800"}', "bogus line"]),
), max_size=12)


@settings(max_examples=150, deadline=None)
@given(sse_lines)
def test_any_sse_text_imports_or_fails_cleanly(lines):
    assert_spliceable("\n".join(lines).encode("utf-8", "surrogatepass"))


jsonl_records = st.lists(st.one_of(
    st.fixed_dictionaries({"seq": json_values, "t": json_values, "type": st.one_of(st.text(max_size=20), json_values),
                           "data": st.one_of(st.text(max_size=40), st.builds(json.dumps, json_values), json_values)}),
    json_values,
), max_size=8)


@settings(max_examples=150, deadline=None)
@given(jsonl_records, st.one_of(st.just({"streamscope": 1, "run": {}}), json_values))
def test_any_jsonl_export_imports_or_fails_cleanly(records, header):
    text = "\n".join(json.dumps(value) for value in [header, *records])
    assert_spliceable(text.encode())


har_entries = st.lists(st.fixed_dictionaries({}, optional={
    "request": json_values, "response": st.one_of(json_values, st.fixed_dictionaries({}, optional={
        "status": json_values, "content": st.one_of(json_values, st.fixed_dictionaries({}, optional={
            "mimeType": st.sampled_from(["text/event-stream", "application/json", "text/plain"]),
            "text": st.one_of(st.builds(lambda ls: "\n".join(ls), sse_lines), json_values)}))})),
    "timings": json_values, "startedDateTime": json_values}), max_size=3)


@settings(max_examples=150, deadline=None)
@given(har_entries)
def test_any_har_imports_or_fails_cleanly(entries):
    assert_spliceable(json.dumps({"log": {"version": "1.2", "entries": entries}}).encode())
