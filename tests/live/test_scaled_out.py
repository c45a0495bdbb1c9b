"""Scaled out, for real: two Daphne processes and stream-worker processes sharing PostgreSQL and
Redis. A run started through one web process is executed by a worker and watched live through the
other; cancel crosses processes; a dead worker's run is found by the live processes."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import httpx
import pytest

from tests.support.live import login, stored_events, wait_for
from tests.support.scaled import scaled_out_marks, two_web_processes

pytestmark = scaled_out_marks()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from two_web_processes(tmp_path_factory.mktemp("scaled"))


@pytest.fixture
def worker(deployment):
    """A live stream worker (started again if a test killed the previous one)."""
    alive = [p for p in deployment.processes if "streamworker" in " ".join(map(str, p.args)) and p.poll() is None]
    return alive[0] if alive else deployment.start_worker()


def start_run(client: httpx.Client, **metadata: str) -> int:
    knobs = {"sim_seed": "5", **metadata}
    body = {"provider": "simulator", "model": "sim-text", "input": "scale out",
            "params": {"metadata": knobs, "background": False}}
    response = client.post("/api/runs/", json=body, headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert response.status_code == 201, response.text
    return response.json()["id"]


def status_of(client: httpx.Client, run_id: int) -> str:
    return client.get(f"/api/runs/{run_id}/").json()["status"]


async def watch(base_url: str, client: httpx.Client, run_id: int,
                timeout: float = 60.0) -> tuple[list[dict], list[dict]]:
    """Every frame of the run's websocket on ``base_url`` until a terminal status: (events, statuses)."""
    import websockets

    host = base_url.removeprefix("http://")
    cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    events, statuses = [], []
    async with websockets.connect(f"ws://{host}/ws/runs/{run_id}/?after=-1", open_timeout=10,
                                  additional_headers={"Cookie": cookie, "Origin": base_url},
                                  max_size=None) as socket:
        async with asyncio.timeout(timeout):
            async for raw in socket:
                frame = json.loads(raw)
                if frame["type"] == "events":
                    events.extend(frame["events"])
                elif frame["type"] == "status":
                    statuses.append(frame)
                    if frame["status"] not in ("queued", "streaming"):
                        return events, statuses
    raise AssertionError("the socket closed before the run ended")


async def test_a_run_started_on_one_web_process_runs_on_a_worker_and_is_watched_live_on_the_other(deployment, worker):
    web_a, web_b = deployment.webs
    client_a, client_b = login(web_a), login(web_b)
    # The first token waits 1.5 s, so the watcher on B is connected before any event exists and
    # every event reaches it live: worker -> Redis -> B.
    run_id = start_run(client_a, sim_tokens_per_s="150", sim_tokens="300", sim_first_token_ms="1500")
    events, statuses = await watch(web_b, client_b, run_id)
    stored = stored_events(client_a, run_id)
    assert statuses[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == list(range(len(stored)))  # every event, once, in order
    assert events == stored
    assert len(stored) > 300
    [(worker_name, status)] = deployment.sql("SELECT worker, status FROM streams_run WHERE id = %s", run_id)
    assert worker_name.endswith(f":{worker.pid}") and status == "completed"


async def test_a_run_on_a_worker_is_cancelled_from_another_web_process(deployment, worker):
    web_a, web_b = deployment.webs
    client_a, client_b = login(web_a), login(web_b)
    run_id = start_run(client_a, sim_tokens_per_s="30", sim_tokens="1000")
    wait_for(lambda: len(stored_events(client_a, run_id)) >= 5, 20, "the worker to stream some events")
    response = client_b.post(f"/api/runs/{run_id}/cancel/", headers={"X-CSRFToken": client_b.cookies["csrftoken"]})
    assert response.status_code < 300, response.text
    wait_for(lambda: status_of(client_a, run_id) == "cancelled", 10, "the worker to stop the run")
    count = len(stored_events(client_a, run_id))
    time.sleep(0.5)
    assert len(stored_events(client_a, run_id)) == count < 1000  # nothing streams after the cancel


async def test_a_run_launched_while_no_worker_lives_starts_when_one_does(deployment, worker):
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    client = login(deployment.webs[0])
    run_id = start_run(client, sim_tokens_per_s="0", sim_tokens="50")
    time.sleep(1.0)
    assert status_of(client, run_id) == "queued"
    deployment.start_worker()
    wait_for(lambda: status_of(client, run_id) == "completed", 20, "a new worker to take the queued run")


async def test_a_killed_worker_s_run_is_marked_interrupted_by_the_live_processes(deployment, worker):
    web_a, web_b = deployment.webs
    client = login(web_a)
    run_id = start_run(client, sim_tokens_per_s="20", sim_tokens="2000")
    wait_for(lambda: len(stored_events(client, run_id)) >= 10, 20, "some events from the worker")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    killed_at = time.monotonic()
    before = stored_events(client, run_id)
    wait_for(lambda: status_of(client, run_id) == "interrupted", 15, "the dead worker's run to be marked interrupted")
    print(f"interrupted {time.monotonic() - killed_at:.1f} s after the kill")
    after = stored_events(client, run_id)
    assert after[: len(before)] == before  # everything stored before the crash is kept
    assert [e["seq"] for e in after] == list(range(len(after)))
    error = client.get(f"/api/runs/{run_id}/").json()["error"]
    assert error["code"] == "interrupted"


async def test_a_killed_worker_s_background_run_is_resumed_by_the_next_worker(deployment, worker):
    client = login(deployment.webs[0])
    knobs = {"sim_seed": "9", "sim_tokens_per_s": "40", "sim_tokens": "200"}
    body = {"provider": "simulator", "model": "sim-text", "input": "resume me", "params": {"metadata": knobs}}
    response = client.post("/api/runs/", json=body, headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert response.status_code == 201, response.text
    run_id = response.json()["id"]
    wait_for(lambda: len(stored_events(client, run_id)) >= 20, 20, "some events from the worker")
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait()
    before = stored_events(client, run_id)
    # The live web processes notice within seconds and hand the run back to the queue; it waits
    # there (still "streaming") until a worker exists again.
    deployment.start_worker()
    wait_for(lambda: status_of(client, run_id) == "completed", 30, "the new worker to resume and finish the run")
    after = stored_events(client, run_id)
    assert after[: len(before)] == before
    assert [e["seq"] for e in after] == list(range(len(after)))
    assert any(e["type"] == "streamscope.resume" for e in after[len(before):])
    deltas = [e["data"]["sequence_number"] for e in after if e["type"] == "response.output_text.delta"]
    assert len(deltas) == len(set(deltas)) == 200  # every upstream token stored exactly once
