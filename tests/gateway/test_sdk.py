"""The official openai SDK through the gateway of a real Daphne, unchanged but for base_url and
api_key: streams, whole answers, chat, resume, cancel, HTTP errors, bad tokens, a client that
leaves. The runs they make are read back through the JSON API with the same token, each by the id
the gateway names in its answer (``x-streamscope-run``): a run whose id was reserved ahead has its
row inserted after the answer's first bytes (a whole answer's, as it goes out), so right after an
answer the newest run listed may still be the one before it (docs/gateway.md, "When the run's row
is written")."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.support.servers import app_with_alice, start_daphne, stop_process

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def app_dir(tmp_path_factory) -> Path:
    """The app's var dir (its SQLite database)."""
    return tmp_path_factory.mktemp("gateway-app")


@pytest.fixture(scope="module")
def app(app_dir) -> Iterator[tuple[str, str]]:
    """(base URL, alice's API token) of a Daphne serving the gateway and, as its upstream, itself."""
    token = app_with_alice(app_dir, "sdk tests")
    process, base_url = start_daphne(app_dir)
    try:
        yield base_url, token
    finally:
        stop_process(process)


@pytest.fixture
def named() -> list[int]:
    """The run ids the gateway named (``x-streamscope-run``) in the answers ``client`` got, in order."""
    return []


@pytest.fixture
def client(app, named) -> Iterator[openai.OpenAI]:
    base_url, token = app

    def note_run(response: httpx.Response) -> None:  # on the head: before a stream's body, also for errors
        if "x-streamscope-run" in response.headers:
            named.append(int(response.headers["x-streamscope-run"]))

    with httpx.Client(event_hooks={"response": [note_run]}) as http:
        yield openai.OpenAI(base_url=f"{base_url}/gateway/simulator/v1", api_key=token, max_retries=0, timeout=30,
                            http_client=http)


def get(app, path: str) -> httpx.Response:
    base_url, token = app
    return httpx.get(f"{base_url}/api/{path}", headers={"Authorization": f"Bearer {token}"}, timeout=10)


def api(app, path: str) -> dict:
    return get(app, path).json()


def ended_run(app, run_id: int, timeout: float = 15.0) -> dict:
    """The run once it has ended. Not found is waited out like streaming: its row may not be in yet."""
    deadline = time.monotonic() + timeout
    while True:
        found = get(app, f"runs/{run_id}/")
        if found.status_code != 404 and found.json()["status"] not in ("queued", "streaming"):
            return found.json()
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} had not ended after {timeout} s: {found.status_code} {found.text[:300]}")
        time.sleep(0.1)


def known(app, run_id: int, timeout: float = 15.0) -> None:
    """Wait until the API knows the run: its row may go in just after the answer's first bytes."""
    deadline = time.monotonic() + timeout
    while get(app, f"runs/{run_id}/").status_code == 404:
        if time.monotonic() > deadline:
            pytest.fail(f"run {run_id} was still unknown after {timeout} s")
        time.sleep(0.05)


def ids_reserved_ahead(database: Path) -> bool:
    """Whether the server has reserved run ids ahead (its first recorded request starts that): a
    block moves SQLite's AUTOINCREMENT counter past it, beyond the number of runs (none is deleted
    here). Its runs' rows then go in after their answers' first bytes (streams/gateway/run_row.py)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        counter = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'streams_run'").fetchone()
        (runs,) = db.execute("SELECT count(*) FROM streams_run").fetchone()
    return counter is not None and counter[0] > runs


@contextlib.contextmanager
def write_locked(database: Path) -> Iterator[None]:
    """SQLite's write lock held, as by another writer (a flush of other runs' events, a block of run
    ids being reserved)."""
    with contextlib.closing(sqlite3.connect(database, isolation_level=None, timeout=10)) as writer:
        writer.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            writer.execute("ROLLBACK")


FAST = {"sim_tokens_per_s": "max"}
# A background response still being written when the test acts on it, however late the test gets the
# CPU on a busy machine: its 60-120 tokens take 30-60 s (at 20 a second, 3-6 s were not enough).
SLOW = {"sim_tokens_per_s": "2"}
# A stream that cannot end by itself before a Stop: the upstream holds after six events (two of them
# text deltas) for longer than the gateway waits for it (STREAMSCOPE_STALL_TIMEOUT_S, 60 s).
HELD = {"sim_tokens_per_s": "20", "sim_stall_after": "6"}


def test_responses_stream(app, client, named):
    with client.responses.stream(model="sim-text", input="Why is the sky blue?", metadata=FAST) as stream:
        types = [event.type for event in stream]
        final = stream.get_final_response()
    assert types[0] == "response.created" and types[-1] == "response.completed"
    assert final.output_text
    run = ended_run(app, named[-1])
    assert run["source"] == "gateway" and run["status"] == "completed" and run["owner"] == "alice"
    assert run["output_text"] == final.output_text
    events = api(app, f"runs/{run['id']}/events/")["events"]
    assert [e["type"] for e in events] == types


def test_responses_without_stream(app, app_dir, client, named):
    # Answered while another writer holds the database: the client has the whole answer before the
    # run's row can go in (its id reserved ahead), so right then the API does not know the run (and
    # the newest run it lists is the one before); the run the answer names is recorded with it once
    # the lock is let go. A recorded request first: a server's first one starts reserving ids.
    database = app_dir / "streamscope.sqlite3"
    client.responses.create(model="sim-text", input="first", metadata=FAST)
    ended_run(app, named[-1])
    deadline = time.monotonic() + 15
    while not ids_reserved_ahead(database):
        assert time.monotonic() < deadline, "the server reserved no run ids ahead"
        time.sleep(0.05)
    with write_locked(database):
        response = client.responses.create(model="sim-text", input="hi", metadata=FAST)
        run_id = named[-1]
        assert get(app, f"runs/{run_id}/").status_code == 404
    assert response.status == "completed" and response.output_text
    run = ended_run(app, run_id)
    assert run["status"] == "completed" and run["output_text"] == response.output_text


def test_chat_completions_stream(app, client, named):
    chunks = list(client.chat.completions.create(model="sim-text", messages=[{"role": "user", "content": "hi"}],
                                                 stream=True, metadata=FAST))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    run = ended_run(app, named[-1])
    assert run["status"] == "completed" and run["output_text"] == text


def test_resume_a_background_stream(app, client, named):
    # A client that leaves cancels a background response (the gateway's rule), so the stream is
    # resumed from a cursor once the first connection has read it all (as after a reconnect).
    first = list(client.responses.create(model="sim-text", input="hello " * 10, stream=True, background=True,
                                         metadata=FAST))
    response_id, cursor = first[0].response.id, first[3].sequence_number
    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=cursor))
    assert [e.sequence_number for e in resumed] == [e.sequence_number for e in first[4:]]
    assert resumed[-1].type == "response.completed"
    run = ended_run(app, named[-1])
    assert run["status"] == "completed" and run["request"]["resume"] == response_id and run["model"] == "sim-text"
    assert len(api(app, f"runs/{run['id']}/events/")["events"]) == len(resumed)


def test_cancel_a_background_response(app, client):
    stream = client.responses.create(model="sim-text", input="hello " * 50, stream=True, background=True,
                                     metadata=SLOW)
    created = next(iter(stream))
    cancelled = client.responses.cancel(created.response.id)
    assert cancelled.status == "cancelled"
    stream.close()


@pytest.mark.parametrize("model, error, status", [
    ("sim-http-400", openai.BadRequestError, 400),
    ("sim-http-429", openai.RateLimitError, 429),
    ("sim-http-500", openai.InternalServerError, 500),
])
def test_http_errors_reach_the_sdk_as_they_were(app, client, named, model, error, status):
    with pytest.raises(error) as caught:
        client.responses.create(model=model, input="hi", stream=True)
    assert caught.value.status_code == status and caught.value.request_id
    if status == 429:
        assert caught.value.response.headers["retry-after"]
    run = ended_run(app, named[-1])
    assert run["status"] == "failed" and run["error"]["http_status"] == status


def test_a_failed_stream_raises_in_the_sdk_and_is_recorded_failed(app, client, named):
    with pytest.raises(openai.APIError):
        for _ in client.responses.create(model="sim-failed", input="hi", stream=True, metadata=FAST):
            pass
    assert ended_run(app, named[-1])["status"] == "failed"


def test_an_unknown_token_is_an_authentication_error(app):
    base_url, _ = app
    bad = openai.OpenAI(base_url=f"{base_url}/gateway/simulator/v1", api_key="ssk_not-a-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_models_list(client):
    assert "sim-text" in [model.id for model in client.models.list()]


def test_a_client_that_leaves_cancels_the_run_and_the_upstream(app):
    base_url, token = app
    body = {"model": "sim-text", "input": "hello " * 50, "stream": True, "background": True, "metadata": SLOW}
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


def test_stop_in_the_dashboard_makes_the_sdk_raise_instead_of_hanging(app, client, named):
    base_url, token = app
    stream = client.responses.create(model="sim-text", input="hello " * 50, stream=True, metadata=HELD)
    run_id, stopped = named[-1], None
    with pytest.raises(openai.APIError) as caught:
        for event in stream:
            if event.type == "response.output_text.delta" and stopped is None:
                known(app, run_id)
                stopped = httpx.post(f"{base_url}/api/runs/{run_id}/cancel/",
                                     headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert stopped.status_code == 202  # a token needs no CSRF header
    assert caught.value.code == "cancelled_by_user"
    assert ended_run(app, run_id)["status"] == "cancelled"
