"""Simulator benchmark: the simulator's CPU per event, as a load generator.

Starts the simulator the way the other benchmarks do (a process of its own, gate open:
``python -m simulator.serve`` on uvicorn, or Daphne with ``STREAMSCOPE_BENCH_SIMULATOR=daphne``),
opens many concurrent ``stream: true`` requests from this process with a deliberately cheap
client (raw asyncio protocols that count bytes and SSE frames, no parsing), and prints the
simulator process's CPU seconds over the events it delivered. Target: <= 20 us per event at
10,000 events/s (200 streams x 50 events/s), nothing lost: once with one write per event
(``sim_write_interval_ms`` 0, the default) and once with 100 ms write batching (what a load
generator asks for). Then the same streams unthrottled.

    .venv/bin/python bench/simulator.py [--streams 200] [--rate 50] [--seconds 15] [--no-stamp]
                                       [--write-interval-ms 0,100] [--unthrottled-tokens 5000]
                                       [--sim-url http://host:port --sim-pid PID]

With ``--sim-url`` it measures a simulator already running (started as in docs/simulator.md,
"Load generator"); the CPU figure then needs ``--sim-pid``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from common import SIMULATOR_SERVER, cpu_seconds, event_loop, machine, start_simulator_process, stop_process

from simulator.scenarios import build_events

TARGET_US = 20.0
FRAME_END = b"\n\n"  # every SSE frame ends so, and no frame holds it elsewhere


@dataclass
class Tally:
    """What one stream delivered: bytes, SSE frames, and whether its body ended properly."""

    frames: int = 0
    chunks: int = 0  # HTTP chunks: the simulator's writes
    nbytes: int = 0
    status: int = 0
    complete: bool = False


class CountingStream(asyncio.Protocol):
    """Send one request, then count the SSE frames of its chunked body without parsing them (the
    client stays cheap): chunk sizes are read, frames are counted by their blank line."""

    def __init__(self, request: bytes, tally: Tally, done: asyncio.Future) -> None:
        self.request, self.tally, self.done = request, tally, done
        self.head = b""
        self.in_body = False
        self.left = 0  # bytes of the current chunk still to come
        self.skip = 0  # the CRLF after a chunk's data
        self.size_line = b""
        self.last = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.tally.nbytes += len(data)
        if not self.in_body:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            self.tally.status = int(self.head.split(b" ", 2)[1])
            data, self.in_body = self.head[end + 4:], True
        position = 0
        while position < len(data) and not self.tally.complete:
            if self.left:
                piece = data[position:position + self.left]
                self.count(piece)
                self.left -= len(piece)
                position += len(piece)
                self.skip = 0 if self.left else 2
            elif self.skip:
                taken = min(self.skip, len(data) - position)
                self.skip -= taken
                position += taken
            else:
                end = data.find(b"\r\n", position)
                if end < 0:
                    self.size_line += data[position:]
                    return
                line, self.size_line = self.size_line + data[position:end], b""
                position = end + 2
                self.left = int(line.split(b";")[0], 16)
                self.tally.complete = self.left == 0
                self.tally.chunks += 1

    def count(self, body: bytes) -> None:
        # With the last byte before: a frame's end split across two pieces counts once (SSE frames
        # never hold three newlines in a row, so nothing counts twice).
        self.tally.frames += (self.last + body).count(FRAME_END)
        self.last = body[-1:]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def stream_body(tokens: int, rate: str, seed: str, stamp: bool, first_token_ms: int,
                write_interval_ms: str = "") -> dict:
    metadata = {"sim_tokens": str(tokens), "sim_tokens_per_s": rate, "sim_first_token_ms": str(first_token_ms),
                "sim_seed": seed, "sim_jitter": "0"}
    if stamp:
        metadata["sim_stamp"] = "1"
    if write_interval_ms:
        metadata["sim_write_interval_ms"] = write_interval_ms
    return {"model": "sim-text", "input": "benchmark", "stream": True, "metadata": metadata}


def http_request(base: str, body: dict) -> bytes:
    url = urlsplit(base)
    payload = json.dumps(body).encode()
    head = (f"POST {url.path}/responses HTTP/1.1\r\nHost: {url.netloc}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer bench\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n")
    return head.encode() + payload


async def drive(sim_url: str, bodies: list[dict]) -> list[Tally]:
    """Open every stream at once and wait for all of them to end."""
    loop = asyncio.get_running_loop()
    url = urlsplit(sim_url)
    tallies = [Tally() for _ in bodies]
    waits = []
    for body, tally in zip(bodies, tallies):
        done = loop.create_future()
        request = http_request(sim_url, body)
        await loop.create_connection(lambda r=request, t=tally, d=done: CountingStream(r, t, d),
                                     url.hostname, url.port)
        waits.append(done)
    await asyncio.gather(*waits)
    return tallies


def user_system_seconds(pid: int) -> tuple[float, float]:
    """A process's CPU seconds in user space and in the kernel (``send`` and the reader's wake-up)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def wake_ups(pid: int) -> int:
    """How many times a process went to sleep and was woken (its voluntary context switches): each
    costs a few tens of microseconds of CPU on a VM, whatever the process does when awake."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    return 0


def measure(sim_url: str, sim_pid: int | None, bodies: list[dict], expected: int) -> dict:
    cpu_before = cpu_seconds(sim_pid) if sim_pid else 0.0
    split_before = user_system_seconds(sim_pid) if sim_pid else (0.0, 0.0)
    wakes_before = wake_ups(sim_pid) if sim_pid else 0
    started = time.monotonic()
    tallies = asyncio.run(drive(sim_url, bodies))
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(sim_pid) - cpu_before if sim_pid else float("nan")
    split = user_system_seconds(sim_pid) if sim_pid else (float("nan"), float("nan"))
    wakes = wake_ups(sim_pid) - wakes_before if sim_pid else 0
    events = sum(t.frames for t in tallies)
    return {
        "events": events,
        "expected": expected * len(bodies),
        "whole": sum(t.status == 200 and t.complete and t.frames == expected for t in tallies),
        "bytes": sum(t.nbytes for t in tallies),
        "writes": sum(t.chunks for t in tallies),
        "elapsed": elapsed,
        "cpu": cpu,
        "user": split[0] - split_before[0],
        "system": split[1] - split_before[1],
        "us_per_event": cpu / max(events, 1) * 1e6,
        "wake_ups": wakes,
    }


def report(label: str, streams: int, r: dict, target: bool) -> None:
    lost = r["events"] != r["expected"] or r["whole"] != streams
    verdict = ""
    if target:
        verdict = "  [MET]" if not lost and r["us_per_event"] <= TARGET_US else "  [NOT MET]"
    print(f"  {label}")
    print(f"    events delivered {r['events']}/{r['expected']} ({'nothing lost' if not lost else 'LOST EVENTS'}); "
          f"streams whole {r['whole']}/{streams}; {r['bytes'] / 2**20:.1f} MiB in {r['elapsed']:.1f} s "
          f"= {r['events'] / r['elapsed']:,.0f} events/s")
    events = max(r["events"], 1)
    print(f"    simulator CPU {r['cpu']:.2f} s = {r['us_per_event']:.1f} us per event{verdict} "
          f"(user {r['user'] / events * 1e6:.1f}, kernel {r['system'] / events * 1e6:.1f}); "
          f"{r['events'] / max(r['writes'], 1):.1f} events per write, "
          f"{r['cpu'] / max(r['writes'], 1) * 1e6:.0f} us per write; {r['wake_ups'] / r['elapsed']:,.0f} wake-ups/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=int, default=50, help="events (tokens) per second per stream")
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--no-stamp", action="store_true", help="leave out sim_stamp (on by default, as the "
                                                                  "delay benchmarks ask for it)")
    parser.add_argument("--unthrottled-tokens", type=int, default=5000,
                        help="tokens per stream of the unthrottled pass (0 skips it)")
    parser.add_argument("--write-interval-ms", default="0,100",
                        help="sim_write_interval_ms of the paced passes, one pass per comma-separated value "
                             "(default 0,100: one write per event, then 100 ms batching)")
    parser.add_argument("--sim-url", help="measure this running simulator (…/sim/v1) instead of starting one")
    parser.add_argument("--sim-pid", type=int, help="its process id, for the CPU figure")
    args = parser.parse_args()
    stamp = not args.no_stamp
    print(f"machine: {machine()}")
    process = None
    if args.sim_url:
        sim_url, sim_pid = args.sim_url.rstrip("/"), args.sim_pid
    else:
        work = Path(tempfile.mkdtemp(prefix="streamscope-bench-sim-"))
        process, base = start_simulator_process(work)
        sim_url, sim_pid = base + "/sim/v1", process.pid
        print(f"simulator server: {SIMULATOR_SERVER} (STREAMSCOPE_BENCH_SIMULATOR=uvicorn|daphne); {event_loop()}")
    try:
        print(f"simulator: {args.streams} streams x {args.rate} events/s for {args.seconds:g} s "
              f"= {args.streams * args.rate:,} events/s{', stamped' if stamp else ''} "
              f"(target: <= {TARGET_US:g} us CPU per event, nothing lost)")
        # Warm-up (imports, first-request work), which also gives the cost of a request itself.
        bodies = [stream_body(1, "max", str(i), False, 0) for i in range(args.streams)]
        warm = measure(sim_url, sim_pid, bodies, len(build_events("sim-text", bodies[0])))
        print(f"  warm-up: {args.streams} one-token streams, simulator CPU {warm['cpu'] / args.streams * 1000:.2f} ms "
              f"per request")
        tokens = int(args.rate * args.seconds)
        # A first token after 2 s: every stream is open before any of them sends its deltas.
        for interval in args.write_interval_ms.split(","):
            bodies = [stream_body(tokens, str(args.rate), str(i), stamp, 2000, interval.strip())
                      for i in range(args.streams)]
            expected = len(build_events("sim-text", bodies[0]))
            shape = "one write per event" if float(interval) == 0 else f"writes batched every {interval.strip()} ms"
            report(f"paced, {expected} events per stream, {shape}", args.streams,
                   measure(sim_url, sim_pid, bodies, expected), target=True)
        if args.unthrottled_tokens:
            bodies = [stream_body(args.unthrottled_tokens, "max", str(i), stamp, 0) for i in range(args.streams)]
            expected = len(build_events("sim-text", bodies[0]))
            report(f"unthrottled, {expected} events per stream", args.streams,
                   measure(sim_url, sim_pid, bodies, expected), target=False)
    finally:
        if process is not None:
            stop_process(process)


if __name__ == "__main__":
    main()
