"""Concurrency benchmark: 200 runs at 50 events/s each, all at once, each watched by one viewer.

Target: nothing lost (every run completes with every event stored and every viewer gets
every event exactly once), p99 delay from the simulator writing an event to its viewer receiving
it under 250 ms, and the memory each active run costs the process executing it.

    .venv/bin/python bench/concurrency.py [--mode embedded|scaled|both] [--runs 200] [--rate 50] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import time

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
    start_runs,
)


async def measure(stack: Stack, runs: int, rate: int, seconds: float, first_token_s: float = 5.0) -> dict:
    client = login(stack.webs[0])
    tokens = int(rate * seconds)
    baseline = rss_mb(stack.executor_pid)
    cpu_before = cpu_seconds(stack.executor_pid)
    # The first token comes first_token_s after each run starts: every run is started and watched by then.
    bodies = [run_body(tokens, str(rate), first_token_ms=int(first_token_s * 1000), seed=str(i)) for i in range(runs)]
    started = time.monotonic()
    ids = await start_runs(client, bodies)
    watchers = [Viewer(stack.webs[i % len(stack.webs)], dict(client.cookies), run_id) for i, run_id in enumerate(ids)]
    with PeakMemory(stack.executor_pid) as memory, CpuSplit(stack.roles()) as split:
        await asyncio.gather(*(w.watch() for w in watchers))
    elapsed = time.monotonic() - started
    results = [event_count(client, run_id) for run_id in ids]
    delays = [d for w in watchers for d in w.delays_ms]
    events = sum(count for _, count in results)
    return {
        "completed": sum(status == "completed" for status, _ in results),
        "events": events,
        "complete": sum(w.exactly_once(count) for w, (_, count) in zip(watchers, results)),
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "max": max(delays) if delays else float("nan"),
        "baseline": baseline,
        "peak": memory.peak,
        "cpu": cpu_seconds(stack.executor_pid) - cpu_before,
        "elapsed": elapsed,
        "before_open": sum(w.before_open for w in watchers),
        "split": split.describe(),
        "per_event": split.describe_per_event(events),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes_arg(parser)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--rate", type=int, default=50, help="events (tokens) per second per run")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--first-token-s", type=float, default=5.0,
                        help="each run's wait before its first token: time to start every run and its viewer")
    parser.add_argument("--flush-ms", type=float, default=None,
                        help="STREAMSCOPE_FLUSH_INTERVAL_MS for the run executor (default: the setting's 25)")
    args = parser.parse_args()
    env = {"STREAMSCOPE_FLUSH_INTERVAL_MS": str(args.flush_ms)} if args.flush_ms else None
    print(f"machine: {machine()}")
    print(f"concurrency: {args.runs} runs x {args.rate} events/s for {args.seconds:g} s, one viewer each "
          f"(target: nothing lost; p99 delay < 250 ms)")
    for mode in selected_modes(args.mode):
        with Stack(mode, extra_env=env) as stack:
            r = asyncio.run(measure(stack, args.runs, args.rate, args.seconds, args.first_token_s))
        lost = r["completed"] != args.runs or r["complete"] != args.runs
        verdict = "MET" if not lost and r["p99"] < 250 else "NOT MET"
        per_run = (r["peak"] - r["baseline"]) / args.runs * 1024
        print(f"  {stack.describe()}" + (f", flush every {args.flush_ms:g} ms" if args.flush_ms else ""))
        print(f"    runs completed {r['completed']}/{args.runs}, {r['events']} events; viewers with every event "
              f"exactly once: {r['complete']}/{args.runs}")
        print(f"    delay upstream->viewer: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms"
              f"  [{verdict}]")
        if r["before_open"]:
            print(f"    {r['before_open']:,} events were sent before their viewer connected (not in the delays):"
                  f" starting the runs took longer than --first-token-s")
        print(f"    run executor: RSS {r['baseline']:.0f} -> peak {r['peak']:.0f} MiB = {per_run:.0f} KiB"
              f" per active run; {r['cpu']:.1f} s CPU over {r['elapsed']:.1f} s")
        print(f"    {r['split']}")
        print(f"    {r['per_event']}")


if __name__ == "__main__":
    main()
