"""Fan-out benchmark: one run at 3,000 events/s watched by 50 websocket viewers, in each mode.

Target: every viewer gets every event exactly once; p99 delay from the simulator writing
an event (its ``sim_stamp``) to a viewer receiving it under 100 ms. The 50 viewers live in this
process and connect before the first token; the delay includes this process's own parsing.

    .venv/bin/python bench/fanout.py [--mode embedded|scaled|both] [--viewers 50] [--rate 3000] [--seconds 10]
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
    run_body,
    selected_modes,
    start_runs,
)


async def measure(stack: Stack, viewers: int, rate: int, seconds: float) -> dict:
    client = login(stack.webs[0])
    tokens = int(rate * seconds)
    # The first token waits 3 s so that all viewers are connected and see every event live.
    [run_id] = await start_runs(client, [run_body(tokens, str(rate), first_token_ms=3000)])
    watchers = [Viewer(stack.webs[i % len(stack.webs)], dict(client.cookies), run_id) for i in range(viewers)]
    cpu_before = cpu_seconds(stack.executor_pid)
    started = time.monotonic()
    with PeakMemory(stack.executor_pid) as memory, CpuSplit(stack.roles()) as split:
        await asyncio.gather(*(w.watch() for w in watchers))
    elapsed = time.monotonic() - started
    status, count = event_count(client, run_id)
    delays = [d for w in watchers for d in w.delays_ms]
    return {
        "status": status,
        "events": count,
        "complete": sum(w.exactly_once(count) for w in watchers),
        "p50": percentile(delays, 50),
        "p99": percentile(delays, 99),
        "max": max(delays) if delays else float("nan"),
        "frames": sum(w.frames for w in watchers) / len(watchers),
        "elapsed": elapsed,
        "cpu": cpu_seconds(stack.executor_pid) - cpu_before,
        "rss": memory.peak,
        "split": split.describe(),
        "per_event": split.describe_per_event(count),
        "per_delivery": split.describe_per_event(count * viewers, label="delivery"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes_arg(parser)
    parser.add_argument("--viewers", type=int, default=50)
    parser.add_argument("--rate", type=int, default=3000, help="events (tokens) per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"fan-out: 1 run, {args.rate} events/s for {args.seconds:g} s, {args.viewers} viewers "
          f"(target: all get every event; p99 delay < 100 ms)")
    for mode in selected_modes(args.mode):
        with Stack(mode) as stack:
            r = asyncio.run(measure(stack, args.viewers, args.rate, args.seconds))
        verdict = "MET" if r["complete"] == args.viewers and r["p99"] < 100 else "NOT MET"
        print(f"  {stack.describe()}")
        print(f"    run {r['status']}, {r['events']} events; viewers with every event exactly once: "
              f"{r['complete']}/{args.viewers}; ~{r['frames']:.0f} frames per viewer")
        print(f"    delay upstream->viewer: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms, max {r['max']:.1f} ms"
              f"  [{verdict}]")
        print(f"    run executor: {r['cpu']:.1f} s CPU over {r['elapsed']:.1f} s, peak RSS {r['rss']:.0f} MiB")
        print(f"    {r['split']}")
        print(f"    {r['per_event']}")
        print(f"    {r['per_delivery']}")


if __name__ == "__main__":
    main()
