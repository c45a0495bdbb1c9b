"""Helpers for tests that talk to a real server process over HTTP, as a browser's code would."""

from __future__ import annotations

import time

import httpx


def login(base_url: str, username: str = "alice", password: str = "alice-pass-123") -> httpx.Client:
    """An httpx client holding a logged-in session (and its CSRF cookie) for ``base_url``."""
    client = httpx.Client(base_url=base_url, timeout=10, follow_redirects=False)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={"username": username, "password": password,
                                                       "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    assert response.status_code == 302, response.text
    return client


def stored_events(client: httpx.Client, run_id: int) -> list[dict]:
    """Every stored event of a run, through the events API, page by page."""
    out, after = [], -1
    while True:
        page = client.get(f"/api/runs/{run_id}/events/", params={"after": after, "limit": 5000}).json()
        out.extend(page["events"])
        if page["next_after"] is None:
            return out
        after = page["next_after"]


def wait_for(predicate, timeout: float, what: str):
    """Poll ``predicate`` until it returns something truthy (returned), or fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def start_run(client: httpx.Client, **params) -> int:
    """Start a slow simulator run (25 tokens/s, 150 tokens: six seconds) through the API; its id.
    ``params`` go into the request's params (``background=False`` makes it unresumable)."""
    body = {"provider": "simulator", "model": "sim-text", "input": "tell me a long story",
            "params": {"metadata": {"sim_tokens_per_s": "25", "sim_tokens": "150", "sim_seed": "11"}, **params}}
    response = client.post("/api/runs/", json=body, headers={"X-CSRFToken": client.cookies["csrftoken"]})
    assert response.status_code == 201, response.text
    return response.json()["id"]
