"""Ingest benchmark: how fast one run goes from upstream bytes to stored and published events.

Starts the simulator in its own Daphne process, asks it for one unthrottled stream, and measures:
  1. raw read      - httpx reading the bytes only (the ceiling the simulator allows),
  2. SDK parse     - the official openai SDK parsing the same stream into typed events,
  3. SDK (memory)  - the SDK parsing the same bytes from memory (no network, no simulator),
  4. pipeline      - Streamscope's runner: parse + persist (SQLite, batched) + publish (channel layer),
printing events per second from first byte to last event persisted and published, and the CPU
time per event of this process for the raw read and the pipeline (threads included: the database
writes run on one), which moves far less than the rates when other work shares the machine.
Targets: pipeline >= 2x the SDK's parse-only rate, and >= 75% of the raw-read rate in the same run.

Both sides are measured warm, as a server runs: the raw read after a short read (its connection
and the simulator's paths), the pipeline after a short pipeline (its database thread's connection
and prepared statements, first-use code paths, the allocator's first arenas), then ``--pairs``
alternated raw reads and pipelines; the figures shown are those of the pair with the median ratio
(every pair's ratio is printed; the SDK's parse is measured once). The first (cold) pipeline of the
process is printed too: it cost 5-10 points of the ratio against the next ones in the tenth
session's pairs (docs/performance.md, docs/decisions.md).

On SQLite the database thread checkpoints its write-ahead log at a lull in its writes, not inside
them (streams/pipeline/checkpoints.py): a pipeline that wrote ~4 MB of log or more leaves one due,
and it runs after the window, before the next raw read. Its time is printed, and its CPU is in the
pipeline's CPU per event.

    .venv/bin/python bench/ingest.py [--tokens 50000] [--pairs 3] [--mode embedded|scaled]

--mode scaled persists to a fresh PostgreSQL database (COPY) and publishes to Redis, as a stream
worker does; the default (embedded) uses SQLite and the in-memory layer.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORK = Path(tempfile.mkdtemp(prefix="streamscope-bench-"))
os.environ.setdefault("STREAMSCOPE_VAR_DIR", str(WORK))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("STREAMSCOPE_LOG_LEVEL", "WARNING")

import django  # noqa: E402
import httpx  # noqa: E402

from tests.support.servers import start_daphne, stop_process  # noqa: E402

WARM_UP_TOKENS = 5_000  # each side's warm-up: enough for the pipeline's full-size INSERT statements

def body_for(tokens: int) -> dict:
    return {
        "model": "sim-text",
        "input": "benchmark",
        "stream": True,
        "metadata": {"sim_tokens_per_s": "0", "sim_tokens": str(tokens), "sim_seed": "7", "sim_first_token_ms": "0"},
    }


def raw_read(sim_url: str, tokens: int) -> tuple[int, float, bytes, float]:
    chunks = []
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", sim_url + "/responses", json=body_for(tokens)) as response:
            first = None
            cpu = time.process_time()
            for chunk in response.iter_raw():
                if first is None:
                    first = time.perf_counter()
                chunks.append(chunk)
            end = time.perf_counter()
            cpu = time.process_time() - cpu
    data = b"".join(chunks)
    return data.count(b"\n\n"), end - first, data, cpu


def sdk_parse(sim_url: str, tokens: int) -> tuple[int, float]:
    from openai import OpenAI

    client = OpenAI(base_url=sim_url, api_key="bench")
    body = body_for(tokens)
    stream = client.responses.create(model=body["model"], input=body["input"], stream=True, metadata=body["metadata"])
    count, first = 0, None
    for _event in stream:
        if first is None:
            first = time.perf_counter()
        count += 1
    return count, time.perf_counter() - first


def sdk_parse_memory(data: bytes) -> tuple[int, float]:
    from openai import OpenAI

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=data)

    client = OpenAI(base_url="http://memory/v1", api_key="bench",
                    http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    stream = client.responses.create(model="sim-text", input="x", stream=True)
    count, start = 0, time.perf_counter()
    for _event in stream:
        count += 1
    return count, time.perf_counter() - start


def thread_cpu() -> dict[int, tuple[float, float]]:
    """User and system CPU seconds of each of this process's threads, by thread id."""
    tick = os.sysconf("SC_CLK_TCK")
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            fields = Path(f"/proc/self/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        threads[int(tid)] = (int(fields[11]) / tick, int(fields[12]) / tick)
    return threads


def thread_split(before: dict, after: dict, events: int) -> str:
    """µs per event (user + system) of the main thread and of the busiest other one (the database's)."""
    def spent(tid: int) -> tuple[float, float]:
        user, system = after[tid]
        user0, system0 = before.get(tid, (0.0, 0.0))
        return (user - user0) / events * 1e6, (system - system0) / events * 1e6

    main = spent(os.getpid())
    others = sorted((spent(tid) for tid in after if tid != os.getpid()), key=sum, reverse=True)
    other = others[0] if others else (0.0, 0.0)
    rest = sum(sum(o) for o in others[1:])
    return (f"main thread {main[0]:.1f} + {main[1]:.1f} µs, database thread {other[0]:.1f} + {other[1]:.1f} µs"
            f" (user + system), other threads {rest:.1f} µs")


def pipeline(sim_url: str, tokens: int) -> tuple[int, float, dict, float]:
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    settings.STREAMSCOPE_SIMULATOR_URL = sim_url
    call_command("migrate", verbosity=0)
    user, _ = get_user_model().objects.get_or_create(username="bench")
    from streams.live.control import create_run
    from streams.live.executor import RunExecutor
    from streams.models import Run

    run = create_run(user, "simulator", "sim-text", "benchmark", "",
                     {"metadata": body_for(tokens)["metadata"], "background": False})

    from streams.pipeline.checkpoints import quiet_checkpoints

    reads = [0, 0]
    checkpoint = [0.0, 0.0]  # the wait for the checkpoint after the window, the checkpoint's own time

    async def go():
        runner = RunExecutor(run.pk)
        body_bytes = runner._body_bytes

        def counted(chunk: bytes) -> bool:  # the reads' count and size: fewer, fuller reads cost less per event
            reads[0] += 1
            reads[1] += len(chunk)
            return body_bytes(chunk)

        runner._body_bytes = counted
        start = time.perf_counter()
        await runner.execute()
        end = time.perf_counter()
        first_byte = start + (runner.metrics.first_event_ms or 0) / 1000.0
        # The WAL checkpoint the stream left due runs at the database thread's next lull, as in a
        # server (streams/pipeline/checkpoints.py): after the window, inside the CPU figures.
        quiet = quiet_checkpoints()
        before, settle = quiet.checkpoint_s, time.perf_counter()
        await quiet.settled()
        checkpoint[:] = [time.perf_counter() - settle, quiet.checkpoint_s - before]
        return end - first_byte

    cpu, threads = time.process_time(), thread_cpu()
    elapsed = asyncio.run(go())
    cpu, threads = time.process_time() - cpu, (threads, thread_cpu())
    run = Run.objects.get(pk=run.pk)
    assert run.event_count == run.events.count(), "every event must be stored"
    info = {"status": run.status, "batches_flush_ms": settings.STREAMSCOPE_FLUSH_INTERVAL_MS,
            "threads": thread_split(*threads, run.event_count),
            "reads": f"{reads[0]:,} reads of {reads[1] / max(reads[0], 1) / 1024:.1f} KiB on average",
            "checkpoint": f"the WAL checkpoint after it {checkpoint[1] * 1e3:.1f} ms"
                          f" (waited {checkpoint[0] * 1e3:.1f} ms)"}
    return run.event_count, elapsed, info, cpu


def share(pair: tuple) -> float:
    """The pipeline's rate over the raw read's, of one ``(raw_read(), pipeline())`` pair."""
    (n_raw, t_raw, *_), (n_pipe, t_pipe, *_) = pair
    return (n_pipe / t_pipe) / (n_raw / t_raw)


def median_pair(pairs: list[tuple]) -> tuple:
    """The pair of the median ratio (the lower middle one of an even count)."""
    return sorted(pairs, key=share)[(len(pairs) - 1) // 2]


def use_scaled_services() -> str:
    """Point Django at a fresh PostgreSQL database and Redis (before setup); returns the db name."""
    from tests.support.scaled import REDIS_URL, Deployment, services_missing

    missing = services_missing()
    if missing:
        raise SystemExit(f"--mode scaled needs Redis and PostgreSQL: {missing}")
    deployment = Deployment(WORK)
    deployment._admin(f'CREATE DATABASE "{deployment.db_name}"')
    os.environ.update(DATABASE_URL=deployment.database_url, REDIS_URL=REDIS_URL,
                      STREAMSCOPE_REDIS_PREFIX=deployment.env["STREAMSCOPE_REDIS_PREFIX"])
    return deployment.db_name


def drop_database(name: str) -> None:
    import psycopg
    from django.db import connections

    from tests.support.scaled import PG_URL

    connections.close_all()
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--pairs", type=lambda text: max(1, int(text)), default=3,
                        help="raw read + pipeline pairs measured, at least 1 (the median pair is the figure)")
    parser.add_argument("--mode", choices=["embedded", "scaled"], default="embedded",
                        help="embedded: SQLite + in-memory layer (default); scaled: PostgreSQL + Redis")
    args = parser.parse_args()
    scaled_db = use_scaled_services() if args.mode == "scaled" else None
    django.setup()
    # The simulator always runs embedded, in its own process.
    sim_env = {"STREAMSCOPE_SIMULATOR_OPEN": "1", "STREAMSCOPE_RECOVERY_INTERVAL_S": "0",
               **({"DATABASE_URL": "", "REDIS_URL": ""} if scaled_db else {})}
    process, base_url = start_daphne(WORK, extra_env=sim_env, port=None)
    sim_url = base_url + "/sim/v1"
    try:
        raw_read(sim_url, WARM_UP_TOKENS)
        load = os.getloadavg()[0]
        n_sdk, t_sdk = sdk_parse(sim_url, args.tokens)
        cold = pipeline(sim_url, WARM_UP_TOKENS)
        pairs = []
        for _ in range(args.pairs):
            pairs.append((raw_read(sim_url, args.tokens), pipeline(sim_url, args.tokens)))
    finally:
        stop_process(process)
        if scaled_db:
            drop_database(scaled_db)
    from django.conf import settings

    print(f"machine: {platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
          f"database {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} · "
          f"layer {settings.CHANNEL_LAYERS['default']['BACKEND'].rsplit('.', 1)[-1]} · load average {load:.2f}")
    (n_raw, t_raw, data, cpu_raw), (n_pipe, t_pipe, info, cpu_pipe) = median_pair(pairs)
    n_mem, t_mem = sdk_parse_memory(data)
    print(f"stream: {args.tokens} tokens, {len(data) / 1e6:.1f} MB, {n_raw} events; "
          f"{args.pairs} raw read + pipeline pairs after a {WARM_UP_TOKENS:,}-token warm-up of each, the median shown")
    rows = [
        ("raw read (httpx, bytes only)", n_raw, t_raw),
        ("openai SDK parse (over HTTP)", n_sdk, t_sdk),
        ("openai SDK parse (from memory)", n_mem, t_mem),
        ("streamscope parse+persist+publish", n_pipe, t_pipe),
    ]
    for label, count, seconds in rows:
        print(f"  {label:<36} {count:>8} events  {seconds:7.3f} s  {count / seconds:>10,.0f} events/s")
    ratio = (n_pipe / t_pipe) / (n_sdk / t_sdk)
    print(f"pipeline / SDK-over-HTTP rate: {ratio:.2f}x (target >= 2x) · run {info['status']}")
    shares = " ".join(f"{share(pair):.0%}" for pair in pairs)
    print(f"pipeline / raw-read rate: {share(median_pair(pairs)):.0%} (target >= 75%; each pair: {shares})")
    print(f"  the process's first pipeline ({WARM_UP_TOKENS:,} tokens, cold): {cold[0] / cold[1]:,.0f} events/s, "
          f"CPU {cold[3] / cold[0] * 1e6:.1f} µs per event")
    print(f"CPU per event in this process: raw read {cpu_raw / n_raw * 1e6:.1f} µs, "
          f"pipeline {cpu_pipe / n_pipe * 1e6:.1f} µs (read, record, store, publish; threads included)")
    print(f"  pipeline by thread: {info['threads']}; {info['reads']}; {info['checkpoint']}")


if __name__ == "__main__":
    main()
