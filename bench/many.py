"""Many slow streams: 1,000 runs at 20 events/s for 60 s, all at once, each watched by one viewer.

Real traffic is many slow, long-lived streams rather than a few fast ones. Target: nothing lost
(every run completes with every event stored, every viewer gets every event exactly once), p99
delay from the simulator writing an event to its viewer receiving it under 500 ms, and the memory
each active run costs the process executing it printed (target: at most 200 KiB), with the CPU per
event of each process.

The 1,000 websockets are spread over ``--clients`` processes of their own (default 2), so that the
benchmark's clients do not become the bottleneck; their CPU is counted as "benchmark clients".
Every process gets the hard limit of open files (each socket is a descriptor; Daphne holds one
per viewer and one per upstream stream).

    .venv/bin/python bench/many.py [--mode embedded|scaled|both] [--runs 1000] [--rate 20] [--seconds 60]
                                   [--clients 2] [--first-token-s 90] [--windows 5]
                                   [--server-env STREAMSCOPE_GC_THRESHOLD=700,10,10 --server-env ...]

Where the delay comes from: with ``--windows S`` it prints, every S seconds from the first token,
the delays of the events received in that window next to each process's CPU (a process at 100% is
a saturated core) and the web process's garbage collections (dashboard/garbage_collector.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import resource
import tempfile
import threading
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import (
    CpuSplit,
    PeakMemory,
    Stack,
    Viewer,
    cpu_seconds,
    event_count,
    login,
    machine,
    modes_arg,
    percentile,
    rss_mb,
    run_body,
    selected_modes,
)

TARGET_P99_MS = 500.0
TARGET_KIB_PER_RUN = 200.0


def raise_open_files_limit() -> int:
    """Soft limit of open files up to the hard one, for this process and every process it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


@dataclass
class Seen:
    """What one viewer got, small enough to send back from a client process."""

    run_id: int
    count: int  # events received
    in_order: bool  # they were seqs 0..count-1, each once
    frames: int
    final: str | None


@dataclass
class TimedViewer(Viewer):
    """A viewer that also keeps when each delay in ``delays_ms`` was received (wall clock)."""

    received: array = field(default_factory=lambda: array("d"))

    def _take(self, raw: str, opened: float) -> bool:
        before = len(self.delays_ms)
        final = super()._take(raw, opened)
        added = len(self.delays_ms) - before
        if added:
            self.received.extend([time.time()] * added)
        return final


class CpuTimeline:
    """Each role's CPU (in cores) per ``every`` seconds, sampled in a thread: (wall clock, {role: cores});
    and the RSS of ``rss_pid`` at each sample, (wall clock, MiB) in ``rss``."""

    def __init__(self, roles: dict[str, list[int]], every: float = 1.0, rss_pid: int = 0) -> None:
        self.roles, self.every, self.rss_pid = roles, every, rss_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.rss: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _read(self) -> dict[int, float]:
        seconds = {}
        for pid in {pid for pids in self.roles.values() for pid in pids}:
            with contextlib.suppress(OSError):  # a client process that finished
                seconds[pid] = cpu_seconds(pid)
        return seconds

    def _sample(self) -> None:
        last, clock = self._read(), time.time()
        while not self._stop.wait(self.every):
            now, seconds = time.time(), self._read()
            self.samples.append((now, {role: sum(seconds[pid] - last[pid] for pid in pids
                                                 if pid in seconds and pid in last) / (now - clock)
                                       for role, pids in self.roles.items()}))
            last, clock = seconds, now
            if self.rss_pid:
                with contextlib.suppress(OSError):
                    self.rss.append((now, rss_mb(self.rss_pid)))

    def __enter__(self) -> CpuTimeline:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def watch_share(connection, base_urls: list[str], cookies: dict, run_ids: list[int], timeout: float) -> None:
    """A client process: watch ``run_ids`` until each run's final status; send back what each viewer
    got and every delay (as one array of floats, not a list of objects)."""
    raise_open_files_limit()

    async def go() -> list[TimedViewer]:
        viewers = [TimedViewer(base_urls[i % len(base_urls)], cookies, run_id) for i, run_id in enumerate(run_ids)]
        await asyncio.gather(*(v.watch(timeout=timeout) for v in viewers))
        return viewers

    connection.recv()  # the parent says when to connect: after it started the runs
    started, cpu = time.monotonic(), time.process_time()
    viewers = asyncio.run(go())
    seen = [Seen(v.run_id, len(v.seqs), v.seqs == list(range(len(v.seqs))), v.frames,
                 v.final["status"] if v.final else None) for v in viewers]
    delays = array("d", (d for v in viewers for d in v.delays_ms))
    received = array("d")
    for v in viewers:
        received.extend(v.received)
    connection.send((seen, delays.tobytes(), received.tobytes(), time.monotonic() - started,
                     sum(v.retries + v.reconnects for v in viewers), sum(v.before_open for v in viewers),
                     time.process_time() - cpu))
    connection.close()


class Clients:
    """``count`` client processes, started before the measurement so that their start-up is not in it."""

    def __init__(self, count: int) -> None:
        self.context = multiprocessing.get_context("spawn")
        self.count = count
        self.processes: list = []
        self.pipes: list = []

    def start(self, base_urls: list[str], cookies: dict, run_ids: list[int], timeout: float) -> list[int]:
        for index in range(self.count):
            parent, child = self.context.Pipe()
            share = run_ids[index::self.count]
            process = self.context.Process(target=watch_share, args=(child, base_urls, cookies, share, timeout),
                                           daemon=True)
            process.start()
            child.close()  # so that a client that dies shows here as EOFError, not as a wait forever
            self.processes.append(process)
            self.pipes.append(parent)
        return [p.pid for p in self.processes]

    def go(self) -> None:
        for pipe in self.pipes:
            pipe.send("go")

    def results(self) -> tuple[list[Seen], array, array, float, int, int]:
        seen: list[Seen] = []
        delays, received = array("d"), array("d")
        slowest, retries, before_open = 0.0, 0, 0
        self.cpu = 0.0  # the client processes' own CPU seconds (they are gone when the window closes)
        for pipe, process in zip(self.pipes, self.processes):
            part, raw, raw_received, elapsed, tries, early, cpu = pipe.recv()
            process.join()
            seen.extend(part)
            delays.frombytes(raw)
            received.frombytes(raw_received)
            slowest, retries, before_open = max(slowest, elapsed), retries + tries, before_open + early
            self.cpu += cpu
        return seen, delays, received, slowest, retries, before_open


async def start_together(client, count: int, tokens: int, rate: int, at: float) -> list[int]:
    """Start ``count`` runs whose first tokens all come at wall-clock time ``at``: each run's
    ``sim_first_token_ms`` is what is left until then when it is sent, so that the runs stream side
    by side for the whole time however long starting them takes."""
    headers = {"X-CSRFToken": client.cookies["csrftoken"]}
    ids: list[int] = [0] * count
    gate = asyncio.Semaphore(32)
    async with httpx.AsyncClient(base_url=str(client.base_url), cookies=client.cookies, timeout=120) as session:
        async def one(index: int) -> None:
            async with gate:
                wait_ms = max(0, int((at - time.time()) * 1000))
                body = run_body(tokens, str(rate), first_token_ms=wait_ms, seed=str(index))
                response = await session.post("/api/runs/", json=body, headers=headers)
                if response.status_code != 201:
                    raise RuntimeError(f"starting a run failed: {response.status_code} {response.text[:200]}")
                ids[index] = response.json()["id"]

        await asyncio.gather(*(one(i) for i in range(count)))
    return ids


def measure(stack: Stack, args: argparse.Namespace) -> dict:
    client = login(stack.webs[0])
    tokens = int(args.rate * args.seconds)
    clients = Clients(args.clients)
    # Every run's first token comes first_token_s after the first run was started: by then all
    # are started and watched, every event is delivered live, and the runs stream side by side.
    first_token_at = time.time() + args.first_token_s
    baseline = {pid: rss_mb(pid) for pid in {stack.executor_pid, *stack.web_pids()}}
    begun = time.monotonic()
    ids = asyncio.run(start_together(client, args.runs, tokens, args.rate, first_token_at))
    started_s = time.monotonic() - begun
    client_pids = clients.start(stack.webs, dict(client.cookies), ids,
                                timeout=args.first_token_s + args.seconds * 3 + 120)
    roles = stack.roles()
    timeline_roles = {role: pids for role, pids in roles.items() if role != "benchmark clients"}
    timeline_roles["benchmark clients"] = client_pids
    with contextlib.ExitStack() as sampling:
        memories = {pid: sampling.enter_context(PeakMemory(pid, every=0.25)) for pid in baseline}
        timeline = sampling.enter_context(CpuTimeline(timeline_roles, every=0.5, rss_pid=stack.executor_pid))
        with CpuSplit(roles) as split:
            clients.go()
            seen, delays, received, watched_s, retries, before_open = clients.results()
    split.used["benchmark clients"] += clients.cpu
    results = {run_id: event_count(client, run_id) for run_id in ids}
    events = sum(count for _, count in results.values())
    return {
        "started_s": started_s,
        "first_token_at": first_token_at,
        "watched_s": watched_s,
        "retries": retries,
        "before_open": before_open,
        "completed": sum(status == "completed" for status, _ in results.values()),
        "events": events,
        "received": sum(s.count for s in seen),
        "exactly_once": sum(s.in_order and s.count == results[s.run_id][1] for s in seen),
        "frames": sum(s.frames for s in seen) / max(1, len(seen)),
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "max": max(delays) if delays else float("nan"),
        "memory": {pid: (baseline[pid], memories[pid].peak) for pid in baseline},
        # The runs' end (all at once, each writing its whole text and final event) is a burst of its
        # own: the peak while every run streams is told apart from the peak with the end.
        "streaming_peak": max((mib for at, mib in timeline.rss
                               if first_token_at <= at <= first_token_at + args.seconds), default=float("nan")),
        "windows": windows(delays, received, timeline.samples, first_token_at, args.windows),
        "split": split.describe(),
        "per_event": split.describe_per_event(events),
    }


def windows(delays: array, received: array, cpu: list[tuple[float, dict[str, float]]], first_token_at: float,
            every: float) -> list[tuple[float, int, float, float, float, dict[str, float]]]:
    """Per ``every`` seconds from the first token: (start s, events, p50, p99, max delay ms, mean CPU
    per role in cores) of the events received in it."""
    if not every or not received:
        return []
    by_window: dict[int, list[float]] = {}
    for delay, at in zip(delays, received):
        by_window.setdefault(int((at - first_token_at) // every), []).append(delay)
    rows = []
    for index in sorted(by_window):
        start, end = first_token_at + index * every, first_token_at + (index + 1) * every
        samples = [roles for at, roles in cpu if start < at <= end]
        mean = {role: sum(s[role] for s in samples) / len(samples) for role in samples[0]} if samples else {}
        values = by_window[index]
        rows.append((index * every, len(values), percentile(values, 50), percentile(values, 99), max(values), mean))
    return rows


def gc_summary(path: Path, first_token_at: float, every: float, runs: int) -> list[str]:
    """The web process's collections (dashboard/garbage_collector.py's log), in a few lines."""
    if not path.exists():
        return ["    garbage collections: no log (the server did not write one)"]
    report = json.loads(path.read_text())
    lines = [f"    web process's garbage collections (threshold {tuple(report['threshold'])},"
             f" {report['frozen']:,} objects frozen at start-up; counted until its last write):"]
    for generation, figures in enumerate(report["generations"]):
        lines.append(f"      generation {generation}: {figures['collections']:,} collections,"
                     f" {figures['total_ms']:,.0f} ms in all ({figures.get('cpu_ms', 0):,.0f} ms of CPU),"
                     f" longest {figures['max_ms']:.1f} ms")
    slow = report["slow"]
    if slow:
        by_window: dict[int, list] = {}
        for started, generation, ms, collected in slow:
            by_window.setdefault(int((started - first_token_at) // every), []).append((generation, ms, collected))
        parts = []
        for index in sorted(by_window):
            pauses = by_window[index]
            parts.append(f"{index * every:+.0f} s: {len(pauses)} ({sum(ms for _, ms, _ in pauses):.0f} ms,"
                         f" longest {max(ms for _, ms, _ in pauses):.0f} ms, gen {max(g for g, _, _ in pauses)})")
        lines.append("      pauses >= 10 ms by window from the first token: " + "; ".join(parts))
    memory = [sample for sample in report.get("memory", []) if "glibc_in_use_kib" in sample]
    if len(memory) > 1:
        first, peak = memory[0], max(memory, key=lambda sample: sample["rss_kib"])
        per = {key: (peak[key] - first[key]) / runs for key in peak if key.endswith("_kib")}
        rest = per["rss_kib"] - per["glibc_arenas_kib"] - per["glibc_mapped_kib"]
        lines.append(f"    web process's RSS at its sampled peak ({peak['at'] - first_token_at:+.0f} s) over its first"
                     f" sample, per run: {per['rss_kib']:.0f} KiB = glibc in use {per['glibc_in_use_kib']:.0f}"
                     f" + glibc free in arenas {per['glibc_free_kib']:.0f} + glibc mapped {per['glibc_mapped_kib']:.0f}"
                     f" + the rest (pymalloc's arenas, stacks; untouched arena pages count negative) {rest:.0f};"
                     f" of glibc's in use, SQLite's heap {per.get('sqlite_kib', float('nan')):.0f}")
        by_window: dict[int, dict] = {}
        for sample in memory:  # the last sample of each window
            by_window[int((sample["at"] - first_token_at) // every)] = sample
        lines.append("      RSS over the first sample, KiB per run, at each window's last sample (glibc free in"
                     " arenas): " + "; ".join(f"{index * every:+.0f} s {(s['rss_kib'] - first['rss_kib']) / runs:.0f}"
                                              f" ({(s['glibc_free_kib'] - first['glibc_free_kib']) / runs:.0f})"
                                              for index, s in sorted(by_window.items()) if index >= -1))
        if "glibc_main_free_kib" in per:
            lines.append(f"      glibc per run by arena: the event loop's (main) {per['glibc_main_arena_kib']:.0f}"
                         f" KiB, {per['glibc_main_free_kib']:.0f} free; the other threads' hold"
                         f" {per['glibc_arenas_kib'] - per['glibc_main_arena_kib']:.0f},"
                         f" {per['glibc_free_kib'] - per['glibc_main_free_kib']:.0f} free")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes_arg(parser)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=20, help="events (tokens) per second per run")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=2, help="client processes holding the websockets")
    parser.add_argument("--first-token-s", type=float, default=90.0,
                        help="from the first run's start to every run's first token: time to start every run "
                             "and connect its viewer")
    parser.add_argument("--windows", type=float, default=5.0,
                        help="print the delays, CPU and collections per this many seconds from the first token "
                             "(0: not)")
    parser.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE",
                        help="an environment variable for the web process (repeatable), e.g. "
                             "STREAMSCOPE_GC_THRESHOLD=700,10,10 or MALLOC_ARENA_MAX=2")
    args = parser.parse_args()
    files = raise_open_files_limit()
    print(f"machine: {machine()}; open files per process: {files}")
    print(f"many slow streams: {args.runs} runs x {args.rate} events/s for {args.seconds:g} s, one viewer each, "
          f"{args.clients} client processes (target: nothing lost; p99 delay <= {TARGET_P99_MS:.0f} ms; "
          f"<= {TARGET_KIB_PER_RUN:.0f} KiB per active run)")
    # The wait before the first token is the benchmark's, not a stalled upstream.
    env = {"STREAMSCOPE_WORKER_MAX_RUNS": str(args.runs + 100),
           "STREAMSCOPE_STALL_TIMEOUT_S": str(args.first_token_s + 60)}
    gc_log = Path(tempfile.mkdtemp(prefix="streamscope-many-")) / "gc.json"
    env["STREAMSCOPE_GC_LOG"] = str(gc_log)
    for assignment in args.server_env:
        name, _, value = assignment.partition("=")
        env[name] = value
    if args.server_env:
        print(f"web process environment: {' '.join(args.server_env)}")
    for mode in selected_modes(args.mode):
        with Stack(mode, extra_env=env) as stack:
            r = measure(stack, args)
            executor, webs = stack.executor_pid, stack.web_pids()
        lost = r["completed"] != args.runs or r["exactly_once"] != args.runs
        verdict = "MET" if not lost and r["p99"] <= TARGET_P99_MS else "NOT MET"
        print(f"  {stack.describe()}")
        print(f"    {args.runs} runs started in {r['started_s']:.1f} s; viewers watched for {r['watched_s']:.1f} s"
              f" ({r['retries']} handshakes or sockets opened again)")
        print(f"    runs completed {r['completed']}/{args.runs}, {r['events']:,} events stored, {r['received']:,}"
              f" received; viewers with every event exactly once: {r['exactly_once']}/{args.runs};"
              f" ~{r['frames']:.0f} frames per viewer  [{'nothing lost' if not lost else 'LOST'}]")
        print(f"    delay upstream->viewer: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms"
              f"  [{verdict}]")
        if r["before_open"]:
            print(f"    {r['before_open']:,} events were sent before their viewer connected (not in the delays):"
                  f" starting the runs took longer than --first-token-s")
        base, peak = r["memory"][executor]
        per_run = (peak - base) / args.runs * 1024
        memory_verdict = "MET" if per_run <= TARGET_KIB_PER_RUN else "NOT MET"
        print(f"    memory per active run (process executing the runs): RSS {base:.0f} -> peak {peak:.0f} MiB"
              f" = {per_run:.0f} KiB  [{memory_verdict}]; peak while every run streams (first token to"
              f" +{args.seconds:g} s, sampled every 0.5 s) {r['streaming_peak']:.0f} MiB"
              f" = {(r['streaming_peak'] - base) / args.runs * 1024:.0f} KiB")
        for pid in webs:
            if pid != executor:
                base, peak = r["memory"][pid]
                print(f"    web process (viewers' sockets): RSS {base:.0f} -> peak {peak:.0f} MiB"
                      f" = {(peak - base) / args.runs * 1024:.0f} KiB per viewer")
        print(f"    {r['split']}")
        print(f"    {r['per_event']}")
        if r["windows"]:
            print(f"    per {args.windows:g} s from the first token (events by when they were received;"
                  " CPU in cores, 1.0 = one core busy):")
            for start, count, p50, p99, worst, cpu in r["windows"]:
                cores = ", ".join(f"{role} {value:.2f}" for role, value in cpu.items())
                print(f"      {start:+5.0f} s: {count:7,} events, p50 {p50:6.0f} / p99 {p99:6.0f}"
                      f" / max {worst:6.0f} ms; {cores}")
            for line in gc_summary(gc_log, r["first_token_at"], args.windows, args.runs):
                print(line)
        gc_log.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
