"""What the benchmarks share: start Streamscope in either mode as real processes, log in, start runs
through the API, and watch them over websockets, measuring each event's delay.

Modes:
  embedded - one Daphne process: SQLite, in-memory channel layer, runs as asyncio tasks in it.
  scaled   - PostgreSQL (a fresh database) + Redis, a Daphne web process and a stream worker.
The simulator always runs in a process of its own: ``python -m simulator.serve`` (uvicorn), or Daphne
with ``STREAMSCOPE_BENCH_SIMULATOR=daphne`` (how every figure before 2026-11-30's second pass was
taken; in scaled mode, before its third session). Delay of an event = wall clock when a viewer
receives it minus the ``sim_stamp`` the simulator wrote into it when it sent it.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from streams.event_loop import chosen_loop  # noqa: E402
from tests.support.scaled import Deployment, services_missing  # noqa: E402
from tests.support.servers import start_daphne, start_simulator, stop_process  # noqa: E402

USER, PASSWORD = "bench", "bench-pass-123"
SEQ = re.compile(r'\{"seq":(\d+),"t":')
STAMP = re.compile(r'"sim_stamp":([0-9.]+)')
_connecting: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}


def connecting() -> asyncio.Semaphore:
    """At most 25 websocket handshakes in flight at once (per event loop)."""
    return _connecting.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(25))
# A simulator-only process: the gate open, and no housekeeping (it runs no runs and has no tables).
SIMULATOR_ONLY = {"STREAMSCOPE_SIMULATOR_OPEN": "1", "STREAMSCOPE_RECOVERY_INTERVAL_S": "0"}
# Which server runs the simulator-only process: "uvicorn" (python -m simulator.serve) or "daphne".
SIMULATOR_SERVER = os.environ.get("STREAMSCOPE_BENCH_SIMULATOR", "uvicorn")
BENCH_ENV = {
    # As deployed: DEBUG off (on, Django keeps every query's text per connection and has SQLite
    # quote each query's parameters for it: web + runs ~8% more CPU per event in bench/concurrency.py).
    "DJANGO_DEBUG": os.environ.get("DJANGO_DEBUG", "0"),
    "STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER": "100000",
    "STREAMSCOPE_LOG_LEVEL": "WARNING",
    "STREAMSCOPE_RECOVERY_INTERVAL_S": "2",
}


def start_simulator_process(work: Path, extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    """The benchmarks' simulator-only process on ``SIMULATOR_SERVER``; (process, base URL)."""
    env = {**SIMULATOR_ONLY, "STREAMSCOPE_LOG_LEVEL": "WARNING", "DJANGO_DEBUG": BENCH_ENV["DJANGO_DEBUG"],
           **(extra_env or {})}
    if SIMULATOR_SERVER == "daphne":
        return start_daphne(work, extra_env=env)
    if SIMULATOR_SERVER != "uvicorn":
        raise SystemExit(f"STREAMSCOPE_BENCH_SIMULATOR must be uvicorn or daphne, not {SIMULATOR_SERVER!r}")
    return start_simulator(work, extra_env=env)


def event_loop() -> str:
    """The servers' event loop, as they will choose it (``STREAMSCOPE_EVENT_LOOP``; streams/event_loop.py)."""
    return f"servers on {chosen_loop()}'s event loop"


def _serves_web(process: subprocess.Popen) -> bool:
    """A Daphne process (``python -m dashboard.serve``, or ``daphne`` as before 2026-11-30's fifth session)."""
    command = " ".join(map(str, process.args))
    return "dashboard.serve" in command or "daphne" in command


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{platform.node()} · {os.cpu_count()} cores ({cpu}) · {mem:.0f} GiB · Python {platform.python_version()}"


class Stack:
    """Streamscope in one mode. ``web`` is a base URL, ``executor_pid`` the process running runs."""

    def __init__(self, mode: str, work: Path | None = None, webs: int = 1, extra_env: dict | None = None) -> None:
        self.mode = mode
        self.work = work or Path(tempfile.mkdtemp(prefix=f"streamscope-bench-{mode}-"))
        self.extra_env = {**BENCH_ENV, **(extra_env or {})}
        self.webs: list[str] = []
        self.executor_pid = 0
        self._processes: list[subprocess.Popen] = []
        self._deployment: Deployment | None = None
        self._n_webs = webs
        self.client_pids: list[int] = []  # extra benchmark client processes, counted with this one

    def __enter__(self) -> Stack:
        if self.mode == "scaled":
            missing = services_missing()
            if missing:
                raise SystemExit(f"scaled mode needs Redis and PostgreSQL: {missing}")
            self._deployment = Deployment(self.work, extra_env=self.extra_env, simulator=SIMULATOR_SERVER)
            self._deployment.env["STREAMSCOPE_LOG_LEVEL"] = self.extra_env["STREAMSCOPE_LOG_LEVEL"]
            self._deployment.setup(users=((USER, PASSWORD),))
            for _ in range(self._n_webs):
                self.webs.append(self._deployment.start_web())
            self.executor_pid = self._deployment.start_worker().pid
            self.sim_url = self._deployment.sim_url
            return self
        sim_dir = self.work / "sim"
        sim_dir.mkdir(parents=True, exist_ok=True)
        sim, sim_base = start_simulator_process(sim_dir)
        self._processes.append(sim)
        self.sim_url = sim_base + "/sim/v1"
        env = {**self.extra_env, "STREAMSCOPE_SIMULATOR_URL": self.sim_url}
        self._manage(env, "migrate", "--noinput")
        self._manage(env, "shell", "-c",
                     "from django.contrib.auth.models import User;"
                     f" User.objects.create_user({USER!r}, password={PASSWORD!r})")
        for _ in range(self._n_webs):
            process, base = start_daphne(self.work, extra_env=env)
            self._processes.append(process)
            self.webs.append(base)
        self.executor_pid = self._processes[1].pid
        return self

    def _manage(self, env: dict, *args: str) -> None:
        full = {**os.environ, "STREAMSCOPE_VAR_DIR": str(self.work), "DJANGO_SETTINGS_MODULE": "dashboard.settings",
                **env}
        subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full, check=True, capture_output=True)

    def __exit__(self, *exc: Any) -> None:
        if self._deployment is not None:
            self._deployment.close()
        for process in reversed(self._processes):
            stop_process(process)

    def roles(self) -> dict[str, list[int]]:
        """Process ids by what they do, for a CPU split (services found by their command name)."""
        if self._deployment is not None:
            processes = self._deployment.processes
            roles = {"simulator": [processes[0].pid],
                     "web": [p.pid for p in processes[1:] if _serves_web(p)],
                     "stream worker": [self.executor_pid]}
        else:
            roles = {"simulator": [self._processes[0].pid], "web + runs": [p.pid for p in self._processes[1:]]}
        roles["benchmark clients"] = [os.getpid(), *self.client_pids]
        if self._deployment is not None:  # embedded mode uses neither; others' use is not ours
            roles["postgresql"] = postgres_pids(self._deployment.db_name)
            roles["redis"] = pids_named("redis-server")
        return roles

    def web_pids(self) -> list[int]:
        """The Daphne processes serving the pages and websockets (in embedded mode they run the runs too)."""
        if self._deployment is not None:
            return [p.pid for p in self._deployment.processes[1:] if _serves_web(p)]
        return [p.pid for p in self._processes[1:]]

    def describe(self) -> str:
        if self.mode == "scaled":
            return (f"scaled (PostgreSQL + Redis, runs in a stream-worker process; simulator on {SIMULATOR_SERVER};"
                    f" {event_loop()})")
        return (f"embedded (SQLite + in-memory layer, runs inside the Daphne process; simulator on {SIMULATOR_SERVER};"
                f" {event_loop()})")


def login(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=30)
    client.get("/accounts/login/")
    response = client.post("/accounts/login/", data={"username": USER, "password": PASSWORD,
                                                       "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    if response.status_code != 302:
        raise RuntimeError(f"login failed: {response.status_code}")
    return client


def run_body(tokens: int, rate: str, first_token_ms: int = 0, stamp: bool = True, seed: str = "7",
             write_interval_ms: int = 0) -> dict:
    """A run's body. ``write_interval_ms`` 0: the simulator writes every event at its own time, as a
    provider streaming token by token does, so Streamscope reads one event per socket read (the
    realistic, costlier shape); a larger value lets the simulator send what is due together."""
    metadata = {"sim_tokens": str(tokens), "sim_tokens_per_s": rate, "sim_first_token_ms": str(first_token_ms),
                "sim_seed": seed, "sim_jitter": "0", "sim_write_interval_ms": str(write_interval_ms)}
    if stamp:
        metadata["sim_stamp"] = "1"
    return {"provider": "simulator", "model": "sim-text", "input": "benchmark",
            "params": {"metadata": metadata, "background": False}}


async def start_runs(client: httpx.Client, bodies: list[dict], concurrency: int = 16) -> list[int]:
    """POST every body to /api/runs/ (a few at a time); run ids in order."""
    headers = {"X-CSRFToken": client.cookies["csrftoken"]}
    ids: list[int] = [0] * len(bodies)
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=str(client.base_url), cookies=client.cookies, timeout=60) as session:
        async def one(index: int, body: dict) -> None:
            async with gate:
                response = await session.post("/api/runs/", json=body, headers=headers)
                if response.status_code != 201:
                    raise RuntimeError(f"starting a run failed: {response.status_code} {response.text[:200]}")
                ids[index] = response.json()["id"]

        await asyncio.gather(*(one(i, b) for i, b in enumerate(bodies)))
    return ids


@dataclass
class Viewer:
    """One websocket watching one run: every seq received and every stamped event's delay (ms)."""

    base_url: str
    cookies: dict
    run_id: int
    after: int = -1
    seqs: list[int] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    final: dict | None = None
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    frames: int = 0
    retries: int = 0
    # Events the simulator sent before this socket was open: they come from the store's backlog,
    # not live, so they are counted here instead of in delays_ms (a machine too slow to start every
    # run and viewer before the first tokens shows up as a count, not as a fake delay).
    before_open: int = 0
    reconnects: int = 0

    async def watch(self, timeout: float = 300.0) -> Viewer:
        """Until the run's final status; a socket closed abnormally on the way is opened again with
        ``?after=<last seq received>``, as the page does (counted in ``reconnects``)."""
        import websockets

        opened = 0.0
        async with asyncio.timeout(timeout):
            while True:
                socket = await self._open()
                opened = opened or time.time()
                try:
                    async with socket:
                        self.connected.set()
                        async for raw in socket:
                            if self._take(raw, opened):
                                return self
                    return self
                except websockets.exceptions.ConnectionClosedError:
                    self.reconnects += 1

    async def _open(self):
        import websockets

        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        after = self.seqs[-1] if self.seqs else self.after
        url = self.base_url.replace("http://", "ws://") + f"/ws/runs/{self.run_id}/?after={after}"
        for attempt in range(5):
            try:
                async with connecting():
                    return await websockets.connect(url, additional_headers={"Cookie": cookie, "Origin": self.base_url},
                                                    max_size=None, open_timeout=60, ping_interval=None)
            except (OSError, websockets.exceptions.InvalidMessage, websockets.exceptions.InvalidHandshake):
                # Hundreds of handshakes at once on a busy 2-core machine: an occasional one fails.
                self.retries += 1
                await asyncio.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"could not open the websocket of run {self.run_id}")

    def _take(self, raw: str, opened: float) -> bool:
        """One frame; True at the run's final status."""
        received = time.time()
        if raw.startswith('{"type":"events"'):
            # 50 viewers x 3,000 events/s in one process: regexes instead of json.loads keep this
            # client from being the bottleneck. A record's "seq" key and the simulator's
            # "sim_stamp" can't occur unescaped inside a JSON string.
            self.frames += 1
            self.seqs.extend(map(int, SEQ.findall(raw)))
            for stamp in map(float, STAMP.findall(raw)):
                if stamp >= opened:
                    self.delays_ms.append((received - stamp) * 1000.0)
                else:
                    self.before_open += 1
            return False
        frame = json.loads(raw)
        if frame["type"] == "status" and frame["status"] not in ("queued", "streaming"):
            self.final = frame
            return True
        return False

    def exactly_once(self, count: int) -> bool:
        return self.seqs == list(range(self.after + 1, count))


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100.0 * (len(ordered) - 1))))
    return ordered[index]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


class PeakMemory:
    """Samples a process's RSS in a thread; ``peak`` in MiB."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        self.pid, self.every, self.peak, self._stop = pid, every, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return
            self._stop.wait(self.every)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_pids(database: str) -> list[int]:
    """PostgreSQL's processes that work for ``database``: its backends and the server's own
    (writer, checkpointer...), not the backends of other databases on the same server."""
    found = []
    for pid in pids_named("postgres"):
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if database in command or "(" not in command:  # a client backend names its peer "host(port)"
            found.append(pid)
    return found


def pids_named(name: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


class CpuSplit:
    """CPU seconds each role's processes used between ``__enter__`` and ``__exit__``."""

    def __init__(self, roles: dict[str, list[int]]) -> None:
        self.roles = roles
        self.used: dict[str, float] = {}

    def _read(self) -> dict[str, float]:
        totals = {}
        for role, pids in self.roles.items():
            total = 0.0
            for pid in pids:
                try:
                    total += cpu_seconds(pid)
                except OSError:  # a service's short-lived backend
                    pass
            totals[role] = total
        return totals

    def __enter__(self) -> CpuSplit:
        self._start, self._clock = self._read(), time.monotonic()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.elapsed = time.monotonic() - self._clock
        end = self._read()
        self.used = {role: end[role] - self._start[role] for role in self.roles if self.roles[role]}

    def describe(self) -> str:
        parts = [f"{role} {seconds:.1f} s" for role, seconds in self.used.items()]
        total = sum(self.used.values())
        return (f"CPU by process over {self.elapsed:.1f} s: " + ", ".join(parts)
                + f"; total {total:.1f} s = {total / self.elapsed:.2f} of {os.cpu_count()} cores")

    def per_event_us(self, events: int) -> dict[str, float]:
        """Microseconds of CPU per event for each role, plus ``PIPELINE``: Streamscope's own
        processes together (web, runs, stream worker; not the simulator, the benchmark's clients
        or the database servers, which are roles of their own)."""
        if events <= 0:
            return {}
        per = {role: seconds / events * 1e6 for role, seconds in self.used.items()}
        per[PIPELINE] = sum(us for role, us in per.items() if role not in NOT_PIPELINE)
        return per

    def describe_per_event(self, events: int, label: str = "event") -> str:
        """The issue's "CPU per event": each role's CPU seconds over the window divided by ``events``."""
        per = self.per_event_us(events)
        parts = [f"{role} {us:.1f} µs" for role, us in per.items() if role != PIPELINE]
        return (f"CPU per {label} ({events:,} {label}s): " + ", ".join(parts)
                + f"; {PIPELINE} {per.get(PIPELINE, float('nan')):.1f} µs")


PIPELINE = "pipeline (Streamscope processes)"
NOT_PIPELINE = frozenset({"simulator", "benchmark clients", "postgresql", "redis", PIPELINE})


def event_count(client: httpx.Client, run_id: int) -> tuple[str, int]:
    run = client.get(f"/api/runs/{run_id}/").json()
    return run["status"], run["event_count"]


def wait_until_ended(client: httpx.Client, run_ids: list[int], timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(run_ids)
    while pending and time.monotonic() < deadline:
        for run_id in list(pending):
            if event_count(client, run_id)[0] not in ("queued", "streaming"):
                pending.discard(run_id)
        time.sleep(0.5)
    if pending:
        raise RuntimeError(f"{len(pending)} runs did not end within {timeout}s")


def modes_arg(parser) -> None:
    parser.add_argument("--mode", choices=["embedded", "scaled", "both"], default="both",
                        help="which deployment to measure (default: both)")


def selected_modes(mode: str) -> list[str]:
    return ["embedded", "scaled"] if mode == "both" else [mode]
