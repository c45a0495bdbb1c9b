"""Reader benchmark: CPU per event from upstream bytes to a recorded event, many slow streams at once.

A server process writes N chunked streams of Responses-API text deltas at R events/s each (one
write per event, as the simulator and real upstreams do; each event shaped like the simulator's,
~290 bytes). This process reads them all and reports its own CPU time per event, for:

  httpx      - reading through httpx (our asyncio network backend, h11, httpx's byte iterator),
               bytes only: what the runner did before it read bodies straight from the connection;
  direct     - reading straight from the connection (streams/upstream/body.py), bytes only;
  direct+rec - the runner's whole read half: direct reading, SSE decoding, RunRecorder.accept_frame
               (JSON, metrics, the event record) and each record's encoding, as a flush does.

Nothing else runs in this process, so the difference between rows is the reading path alone.

    .venv/bin/python bench/reader.py [--streams 200] [--rate 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
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

from streams.live.recorder import RunRecorder  # noqa: E402
from streams.protocol.sse import SSEDecoder  # noqa: E402
from streams.upstream.client import iter_body, make_client, read_body  # noqa: E402

MODES = ("httpx", "direct", "direct+rec")


def event(seq: int) -> bytes:
    payload = {"type": "response.output_text.delta", "sequence_number": seq,
               "item_id": "msg_10af81bd8be6ad733145caaf7bb9adc7bdf5423d501b5424ab", "output_index": 0,
               "content_index": 0, "logprobs": [], "delta": " word", "obfuscation": "5YSltJU6IFK7",
               "sim_stamp": round(time.time(), 6)}
    return b"event: response.output_text.delta\ndata: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def serve(port: int, rate: float, seconds: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        start = time.monotonic()
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


class Counter:
    """The reader of one stream in each mode; ``events`` counts what it got."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.events = 0
        self.decoder = SSEDecoder()
        self.recorder = RunRecorder(1) if mode == "direct+rec" else None

    def on_bytes(self, chunk: bytes) -> bool:
        recorder = self.recorder
        if recorder is None:
            self.events += chunk.count(b"\n\n")
            return False
        t = recorder._now()
        recorder.metrics.observe_bytes(t)
        for frame in self.decoder.feed(chunk):
            recorder.accept_frame(frame, t)
        if len(recorder.buffer) >= 32:  # what a flush does besides storing: one encoding per record
            self.events += len([r.encoded() for r in recorder.buffer])
            recorder.buffer = []
        return False

    def finish(self) -> None:
        if self.recorder is not None:
            self.events += len([r.encoded() for r in self.recorder.buffer])


async def read_all(url: str, streams: int, mode: str) -> tuple[int, float, float]:
    counters = [Counter(mode) for _ in range(streams)]

    async def one(counter: Counter) -> None:
        async with make_client(10.0, 30.0) as client, client.stream("GET", url) as response:
            if mode == "httpx":
                async for chunk in iter_body(response, 30.0):
                    counter.on_bytes(chunk)
            else:
                await read_body(response, 30.0, counter.on_bytes, asyncio.sleep)
        counter.finish()

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one(counter) for counter in counters))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    return sum(c.events for c in counters), cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated, of {', '.join(MODES)}")
    args = parser.parse_args()
    print(f"reader: {args.streams} streams x {args.rate:g} events/s for {args.seconds:g} s, one write per event;"
          f" load average {os.getloadavg()[0]:.2f}")
    for mode in args.modes.split(","):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = multiprocessing.Process(target=serve, args=(port, args.rate, args.seconds), daemon=True)
        server.start()
        time.sleep(0.5)
        try:
            events, cpu, wall = asyncio.run(read_all(f"http://127.0.0.1:{port}/", args.streams, mode))
        finally:
            server.terminate()
            server.join()
        print(f"  {mode:12s} {events} events in {wall:.1f} s: {cpu:.2f} s CPU = {cpu / events * 1e6:.1f} µs per event")


if __name__ == "__main__":
    main()
