"""What one ordinary API request costs the web process: N requests of each kind, one at a time, on an
otherwise idle embedded server; the web process's CPU per request and the latency p50 / p99.

Kinds: ``POST /api/runs/`` with a session cookie and CSRF header, the same with a Bearer token,
``GET /api/runs/<id>/``, ``GET /api/runs/`` (the list's first page) and a websocket viewer's
handshake up to its first frame. The runs the POSTs start wait a minute for their first token, so
each POST's figure holds the request and its run's start (upstream request included), not the
streaming; they are left waiting when the benchmark ends.

    .venv/bin/python bench/api.py [--requests 100] [--kinds post,post-token,get,list,ws]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import time

import httpx
from common import (
    ROOT,
    USER,
    Stack,
    cpu_seconds,
    login,
    machine,
    percentile,
    run_body,
    start_runs,
    wait_until_ended,
)

from tests.support.servers import manage

KINDS = ("get", "list", "ws", "post", "post-token")
FINISHED_RUNS = 50  # the user's finished runs before the first measured request: a full first page
IDLE_S = 2.0
WARM_UP = 5  # requests of each kind before the measured ones: imports, first connections, caches


def issue_token(stack: Stack) -> str:
    """A personal API token for the benchmark's user (manage.py shell: the secret is printed once)."""
    code = ("from django.contrib.auth.models import User; from dashboard.tokens import issue_token;"
            f" print(issue_token(User.objects.get(username={USER!r}), 'bench')[1])")
    return manage(stack.work, "shell", "-c", code, env=stack.extra_env).strip().splitlines()[-1]


def waiting_run() -> dict:
    """A run that starts (upstream request sent) and then waits 60 s for its first token."""
    return run_body(1, "10", first_token_ms=60_000, stamp=False)


class Kinds:
    """One callable per kind of request; each raises if the answer is not the expected one."""

    def __init__(self, stack: Stack, client: httpx.Client, secret: str, run_id: int) -> None:
        self.base = stack.webs[0]
        self.session = client
        self.csrf = {"X-CSRFToken": client.cookies["csrftoken"]}
        self.token = httpx.Client(base_url=self.base, timeout=30, headers={"Authorization": f"Bearer {secret}"})
        self.run_id = run_id

    def post(self) -> None:
        _expect(self.session.post("/api/runs/", json=waiting_run(), headers=self.csrf), 201)

    def post_token(self) -> None:
        _expect(self.token.post("/api/runs/", json=waiting_run()), 201)

    def get(self) -> None:
        _expect(self.session.get(f"/api/runs/{self.run_id}/"), 200)

    def list(self) -> None:
        _expect(self.session.get("/api/runs/"), 200)

    def ws(self) -> None:
        asyncio.run(self._ws())

    async def _ws(self) -> None:
        import websockets

        cookie = "; ".join(f"{k}={v}" for k, v in self.session.cookies.items())
        url = self.base.replace("http://", "ws://") + f"/ws/runs/{self.run_id}/"
        async with websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": self.base},
                                      max_size=None, ping_interval=None) as socket:
            await socket.recv()

    def call(self, kind: str) -> None:
        getattr(self, kind.replace("-", "_"))()


def _expect(response: httpx.Response, status: int) -> None:
    if response.status_code != status:
        raise RuntimeError(f"{response.request.method} {response.request.url.path}: {response.status_code} "
                           f"{response.text[:200]}")


def measure(kinds: Kinds, kind: str, requests: int, web_pid: int) -> dict:
    for _ in range(WARM_UP):
        kinds.call(kind)
    idle_before, idle_clock = cpu_seconds(web_pid), time.monotonic()
    time.sleep(IDLE_S)
    background = (cpu_seconds(web_pid) - idle_before) / (time.monotonic() - idle_clock)  # CPU s per s
    latencies = []
    cpu_before, clock = cpu_seconds(web_pid), time.monotonic()
    for _ in range(requests):
        started = time.perf_counter()
        kinds.call(kind)
        latencies.append((time.perf_counter() - started) * 1000.0)
    cpu = cpu_seconds(web_pid) - cpu_before - background * (time.monotonic() - clock)
    return {"cpu_ms": cpu / requests * 1000.0, "p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
            "background_ms_per_s": background * 1000.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="measured requests of each kind")
    parser.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated, of {', '.join(KINDS)}")
    args = parser.parse_args()
    chosen = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = set(chosen) - set(KINDS)
    if unknown:
        raise SystemExit(f"unknown kinds: {', '.join(sorted(unknown))}")
    print(f"machine: {machine()}")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; DJANGO_DEBUG="
          f"{os.environ.get('DJANGO_DEBUG', '0 (bench default)')}; commit {_commit()}")
    with Stack("embedded") as stack:
        client = login(stack.webs[0])
        secret = issue_token(stack)
        # Finished one-token runs: the list shows a full page of them; GETs and viewers read the first
        # (its events, then its final status).
        run_ids = asyncio.run(start_runs(client, [run_body(1, "10", stamp=False)] * FINISHED_RUNS))
        wait_until_ended(client, run_ids, timeout=120)
        kinds = Kinds(stack, client, secret, run_ids[0])
        web_pid = stack.web_pids()[0]
        print(f"{args.requests} requests of each kind in turn, after {WARM_UP} unmeasured; web process CPU per request")
        for kind in chosen:
            figures = measure(kinds, kind, args.requests, web_pid)
            print(f"  {kind:<11} CPU {figures['cpu_ms']:6.2f} ms/request   latency p50 {figures['p50']:6.1f} ms"
                  f"   p99 {figures['p99']:6.1f} ms   (background {figures['background_ms_per_s']:.0f} ms/s taken off)",
                  flush=True)
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


def _commit() -> str:
    """The checkout's commit, and whether files differ from it (the figures are of the working tree)."""
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                           capture_output=True, text=True)
    return head.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


if __name__ == "__main__":
    main()
