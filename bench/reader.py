"""Reader benchmark: CPU per event from upstream bytes to a recorded event, many slow streams at once.

A server process writes N chunked streams of Responses-API text deltas at R events/s each (one
write per event, as the simulator and real upstreams do; each event shaped like the simulator's,
~290 bytes). This process reads them all and reports its own CPU time per event, for:

  httpx      - reading through httpx (our asyncio network backend, h11, httpx's byte iterator),
               bytes only: what the runner did before it read bodies straight from the connection;
  direct     - reading straight from the connection (streams/upstream/body.py), bytes only;
  direct+rec - the runner's whole read half: direct reading into ``RunExecutor._body_bytes`` (SSE
               decoding, ``accept_frame``: JSON, metrics, moderation, the event record) and each
               record's encoding, as a flush does (the buffer is encoded and dropped every 32).

CPU is counted over the streaming window only: every stream is connected and has its response
head before the server writes the first event (at one wall-clock moment), so connecting 200
clients is not in the figure; user and kernel time are printed apart. Nothing else runs in this
process, so the difference between rows is the reading path alone. ``--profile FILE`` writes a
cProfile of the window (slower; for shares, not figures).

    .venv/bin/python bench/reader.py [--streams 200] [--rate 50] [--seconds 10] [--modes ...]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import multiprocessing
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("STREAMSCOPE_VAR_DIR", tempfile.mkdtemp(prefix="streamscope-bench-reader-"))
os.environ.setdefault("STREAMSCOPE_LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from streams.live.executor import RunExecutor  # noqa: E402
from streams.protocol.records import encode_rows  # noqa: E402
from streams.protocol.sse import SSEDecoder  # noqa: E402
from streams.upstream.client import iter_body, make_client, read_body  # noqa: E402

MODES = ("httpx", "direct", "direct+rec")
LEAD_S = 3.0  # from starting the clients to the first event: time for all of them to connect


def event(seq: int) -> bytes:
    payload = {"type": "response.output_text.delta", "sequence_number": seq,
               "item_id": "msg_10af81bd8be6ad733145caaf7bb9adc7bdf5423d501b5424ab", "output_index": 0,
               "content_index": 0, "logprobs": [], "delta": " word", "obfuscation": "5YSltJU6IFK7",
               "sim_stamp": round(time.time(), 6)}
    return b"event: response.output_text.delta\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def serve(port: int, rate: float, seconds: float, start_at: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        start = time.monotonic() + (start_at - time.time())
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            data = event(i)
            writer.write(b"%x\r\n%s\r\n" % (len(data), data))
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class BenchExecutor(RunExecutor):
    """The executor's read half with a stand-in flush: every 32 records are encoded and dropped."""

    def __init__(self) -> None:
        super().__init__(1)
        self._decoder = SSEDecoder()
        self.t0 = time.monotonic()
        self.encoded = 0

    def _after_chunk(self) -> bool:
        if len(self.buffer) >= 32:
            self.encoded += len(encode_rows(self.buffer))  # what a flush publishes
            self.buffer = []
        return False


class Counter:
    """The reader of one stream in each mode; ``events`` counts what it got."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.events = 0
        self.executor = BenchExecutor() if mode == "direct+rec" else None
        self.on_bytes = self.executor._body_bytes if self.executor is not None else self.count

    def count(self, chunk: bytes) -> bool:
        self.events += chunk.count(b"\n\n")
        return False

    def finish(self) -> None:
        executor = self.executor
        if executor is not None:
            self.events = executor.encoded + len(encode_rows(executor.buffer))


async def read_all(url: str, streams: int, mode: str, profile: str | None) -> tuple[int, float, float, float]:
    counters = [Counter(mode) for _ in range(streams)]
    ready = 0
    all_ready = asyncio.Event()

    async def one(counter: Counter) -> None:
        nonlocal ready
        async with make_client(10.0, 30.0) as client, client.stream("GET", url) as response:
            ready += 1
            if ready == streams:
                all_ready.set()
            if mode == "httpx":
                async for chunk in iter_body(response, 30.0):
                    counter.on_bytes(chunk)
            else:
                await read_body(response, 30.0, counter.on_bytes, asyncio.sleep)
        counter.finish()

    tasks = [asyncio.ensure_future(one(counter)) for counter in counters]
    await all_ready.wait()
    profiler = cProfile.Profile() if profile else None
    times, wall = os.times(), time.monotonic()
    if profiler is not None:
        profiler.enable()
    await asyncio.gather(*tasks)
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    after, wall = os.times(), time.monotonic() - wall
    return sum(c.events for c in counters), after.user - times.user, after.system - times.system, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    parser.add_argument("--profile", metavar="FILE", help="cProfile the window of the (last) mode into FILE")
    args = parser.parse_args()
    print(f"reader: {args.streams} streams x {args.rate:g} events/s for {args.seconds:g} s, one write per event;"
          f" load average {os.getloadavg()[0]:.2f}")
    for mode in args.modes.split(","):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        start_at = time.time() + LEAD_S
        server = multiprocessing.Process(target=serve, args=(port, args.rate, args.seconds, start_at), daemon=True)
        server.start()
        time.sleep(0.5)
        try:
            events, user, system, wall = asyncio.run(
                read_all(f"http://127.0.0.1:{port}/", args.streams, mode, args.profile))
        finally:
            server.terminate()
            server.join()
        cpu = user + system
        print(f"  {mode:12s} {events} events in {wall:.1f} s: {cpu:.2f} s CPU = {cpu / events * 1e6:.1f} µs per event"
              f" (user {user / events * 1e6:.1f}, kernel {system / events * 1e6:.1f}; load {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
