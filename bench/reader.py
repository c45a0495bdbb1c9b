"""Reader benchmark: CPU per event of reading many slow streams, httpx's default network backend
beside Streamscope's asyncio backend (streams/upstream/asyncio_backend.py).

A server process writes N chunked streams of small SSE events at R events/s each (one write per
event, as the simulator and real upstreams do); this process reads them all through httpx with
each backend in turn and reports its own CPU seconds per 1,000 events. Nothing else runs here, so
the difference is the reading path alone.

    .venv/bin/python bench/reader.py [--streams 200] [--rate 50] [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx  # noqa: E402

from streams.upstream.client import make_client  # noqa: E402

EVENT = b'data: {"type":"response.output_text.delta","sequence_number":1,"delta":" word","item_id":"msg_1"}\n\n'


def serve(port: int, rate: float, seconds: float) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (len(EVENT), EVENT)
        start = time.monotonic()
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            writer.write(chunk)
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


async def read_all(url: str, streams: int, backend: str) -> tuple[int, float, float]:
    client = make_client(10.0, 30.0) if backend == "asyncio" else httpx.AsyncClient(
        timeout=httpx.Timeout(30.0, connect=10.0))
    total = 0

    async def one() -> None:
        nonlocal total
        async with client.stream("GET", url) as response:
            async for chunk in response.aiter_bytes():
                total += chunk.count(b"\n\n")

    cpu, wall = time.process_time(), time.monotonic()
    await asyncio.gather(*(one() for _ in range(streams)))
    cpu, wall = time.process_time() - cpu, time.monotonic() - wall
    await client.aclose()
    return total, cpu, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=200)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    print(f"reader: {args.streams} streams x {args.rate:g} events/s for {args.seconds:g} s, one write per event")
    for backend in ("anyio (httpx default)", "asyncio"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        server = multiprocessing.Process(target=serve, args=(port, args.rate, args.seconds), daemon=True)
        server.start()
        time.sleep(0.5)
        try:
            events, cpu, wall = asyncio.run(read_all(f"http://127.0.0.1:{port}/", args.streams, backend.split()[0]))
        finally:
            server.terminate()
            server.join()
        print(f"  {backend:22s} {events} events in {wall:.1f} s: {cpu:.2f} s CPU"
              f" = {cpu / events * 1e6:.1f} µs per event")


if __name__ == "__main__":
    main()
