"""The official openai SDK through the gateway of a real Daphne, unchanged but for base_url and
api_key: streams, whole answers, chat, resume, cancel, HTTP errors, bad tokens, a client that
leaves. The runs they make are read back through the JSON API with the same token."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.support.servers import app_with_alice, start_daphne, stop_process

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def app(tmp_path_factory) -> Iterator[tuple[str, str]]:
    """(base URL, alice's API token) of a Daphne serving the gateway and, as its upstream, itself."""
    var_dir = tmp_path_factory.mktemp("gateway-app")
    token = app_with_alice(var_dir, "sdk tests")
    process, base_url = start_daphne(var_dir)
    try:
        yield base_url, token
    finally:
        stop_process(process)


@pytest.fixture
def client(app) -> openai.OpenAI:
    base_url, token = app
    return openai.OpenAI(base_url=f"{base_url}/gateway/simulator/v1", api_key=token, max_retries=0, timeout=30)


def api(app, path: str) -> dict:
    base_url, token = app
    return httpx.get(f"{base_url}/api/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()


def ended_run(app, run_id: int, timeout: float = 15.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        run = api(app, f"runs/{run_id}/")
        if run["status"] not in ("queued", "streaming") or time.monotonic() > deadline:
            return run
        time.sleep(0.1)


def latest_gateway_run(app) -> dict:
    return api(app, "runs/?source=gateway")["runs"][0]


FAST = {"sim_tokens_per_s": "max"}


def test_responses_stream(app, client):
    with client.responses.stream(model="sim-text", input="Why is the sky blue?", metadata=FAST) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text
    run = ended_run(app, latest_gateway_run(app)["id"])
    assert run["source"] == "gateway" and run["status"] == "completed" and run["owner"] == "alice"
    assert run["output_text"] == final.output_text
    events = api(app, f"runs/{run['id']}/events/")["events"]
    assert [e["type"] for e in events] == types


def test_responses_without_stream(app, client):
    response = client.responses.create(model="sim-text", input="hi", metadata=FAST)
    assert response.status == "completed" and response.output_text
    run = ended_run(app, latest_gateway_run(app)["id"])
    assert run["status"] == "completed" and run["output_text"] == response.output_text


def test_chat_completions_stream(app, client):
    chunks = list(client.chat.completions.create(model="sim-text", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, metadata=FAST))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    run = ended_run(app, latest_gateway_run(app)["id"])
    assert run["status"] == "completed" and run["output_text"] == text


def test_resume_a_background_stream(app, client):
    # A client that leaves cancels a background response (the gateway's rule), so the stream is
    # resumed from a cursor once the first connection has read it all (as after a reconnect).
    first = list(client.responses.create(model="sim-text", input="hello " * 10, stream=True, background=True,
                                         metadata=FAST))
    response_id, cursor = first[0].response.id, first[3].sequence_number
    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=cursor))
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in first[4:]]
    assert resumed[-1].type == "response.completed"
    run = ended_run(app, latest_gateway_run(app)["id"])
    assert run["status"] == "completed" and run["request"]["resume"] == response_id and run["model"] == "sim-text"
    assert len(api(app, f"runs/{run['id']}/events/")["events"]) == len(resumed)


def test_cancel_a_background_response(app, client):
    stream = client.responses.create(model="sim-text", input="hello " * 50, stream=True, background=True,
                                     metadata={"sim_tokens_per_s": "20"})
    created = next(iter(stream))
    cancelled = client.responses.cancel(created.response.id)
    assert cancelled.status == "cancelled"
    stream.close()


@pytest.mark.parametrize("model, error, status", [
    ("sim-http-400", openai.BadRequestError, 400),
    ("sim-http-429", openai.RateLimitError, 429),
    ("sim-http-500", openai.InternalServerError, 500),
])
def test_http_errors_reach_the_sdk_as_they_were(app, client, model, error, status):
    with pytest.raises(error) as caught:
        client.responses.create(model=model, input="hi", stream=True)
    assert caught.value.status_code == status and caught.value.request_id
    if status == 429:
        assert caught.value.response.headers["retry-after"]
    run = ended_run(app, latest_gateway_run(app)["id"])
    assert run["status"] == "failed" and run["error"]["http_status"] == status


def test_a_failed_stream_raises_in_the_sdk_and_is_recorded_failed(app, client):
    with pytest.raises(openai.APIError):
        for _ in client.responses.create(model="sim-failed", input="hi", stream=True, metadata=FAST):
            pass
    assert ended_run(app, latest_gateway_run(app)["id"])["status"] == "failed"


def test_an_unknown_token_is_an_authentication_error(app):
    base_url, _ = app
    bad = openai.OpenAI(base_url=f"{base_url}/gateway/simulator/v1", api_key="ssk_not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_models_list(client):
    assert "sim-text" in [model.id for model in client.models.list()]


def test_a_client_that_leaves_cancels_the_run_and_the_upstream(app):
    base_url, token = app
    body = {"model": "sim-text", "input": "hello " * 50, "stream": True, "background": True,
            "metadata": {"sim_tokens_per_s": "20"}}
    with httpx.Client(timeout=10) as http, http.stream(
            "POST", f"{base_url}/gateway/simulator/v1/responses", json=body,
            headers={"Authorization": f"Bearer {token}"}) as response:
        run_id = int(response.headers["x-streamscope-run"])
        for chunk in response.iter_bytes():
            if b"response.output_text.delta" in chunk:
                break
    run = ended_run(app, run_id)
    assert run["status"] == "cancelled" and run["error"]["code"] == "client_disconnected"
    response_id = api(app, f"runs/{run_id}/events/")["events"][0]["data"]["response"]["id"]
    upstream = httpx.get(f"{base_url}/gateway/simulator/v1/responses/{response_id}",
                         headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert upstream["status"] == "cancelled"  # the background response was cancelled upstream too


def test_stop_in_the_dashboard_makes_the_sdk_raise_instead_of_hanging(app, client):
    base_url, token = app
    stream = client.responses.create(model="sim-text", input="hello " * 50, stream=True,
                                     metadata={"sim_tokens_per_s": "20"})
    with pytest.raises(openai.APIError) as caught:
        for event in stream:
            if event.type == "response.output_text.delta":
                run_id = latest_gateway_run(app)["id"]
                stopped = httpx.post(f"{base_url}/api/runs/{run_id}/cancel/",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=10)
                assert stopped.status_code == 202  # a token needs no CSRF header
    assert caught.value.code == "cancelled_by_user"
    assert ended_run(app, run_id)["status"] == "cancelled"
