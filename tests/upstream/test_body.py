"""Reading a streaming body straight from the connection (streams/upstream/body.py, client.read_body):
every framing h11 reads, read the same; flow control; drops, stalls and failures of the reader; the
httpx path kept for what it cannot take over. The runner's tests (tests/live/test_executor.py) go
through the same path end to end."""

from __future__ import annotations

import asyncio
import gzip
import ssl

import httpcore
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.upstream.asyncio_backend import AsyncioBackend
from streams.upstream.body import BodyDropped, ChunkedFraming
from streams.upstream.client import UpstreamError, _streamed_body, make_client, read_body

PAYLOAD = b"".join(b'data: {"type":"response.output_text.delta","delta":"w%d"}\n\n' % i for i in range(200))


def chunked(payload: bytes, size: int = 97, trailer: bytes = b"") -> bytes:
    pieces = [payload[i:i + size] for i in range(0, len(payload), size)]
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n" + trailer + b"\r\n"


async def serve(head: bytes, writes: list[tuple[float, bytes]], ending: str = "close",
                ssl_context: ssl.SSLContext | None = None):
    """A one-response server: ``head`` then each write after its delay; "close", "drop" or "hang"."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            writer.write(head)
            for delay, data in writes:
                if delay:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
            if ending == "hang":
                await asyncio.sleep(3600)
            if ending == "drop":
                writer.transport.abort()
                return
            writer.close()
        except (ConnectionError, asyncio.CancelledError):
            writer.transport.abort()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/"


HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
CHUNKED = HEAD + b"transfer-encoding: chunked\r\n\r\n"


async def read_all(url: str, *, stall: float = 5.0, wait_every: int = 0, client: httpx.AsyncClient | None = None):
    """(body bytes, number of waits, whether the body was read straight from the connection)."""
    received, waits, calls = bytearray(), [], [0]

    def on_bytes(data: bytes) -> bool:
        received.extend(data)
        calls[0] += 1
        return bool(wait_every) and calls[0] % wait_every == 0

    async def on_wait() -> None:
        waits.append(len(received))
        await asyncio.sleep(0.001)

    async with (client or make_client(5, stall)) as http:
        async with http.stream("GET", url) as response:
            direct = _streamed_body(response, stall) is not None
            await read_body(response, stall, on_bytes, on_wait)
    return bytes(received), waits, direct


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=1, max_value=300), st.lists(st.integers(min_value=1, max_value=4000), max_size=12),
       st.sampled_from([b"", b"x-checksum: 1\r\n", b"a: b\r\nc: d\r\n"]))
def test_chunked_framing_gives_the_payload_for_any_split_of_the_wire(size, cuts, trailer):
    wire = chunked(PAYLOAD[:2000], size, trailer) + b"ignored after the end"
    points = sorted({c for c in cuts if c < len(wire)})
    framing = ChunkedFraming()
    pieces = [piece for a, b in zip([0, *points], [*points, len(wire)]) for piece in framing.feed(wire[a:b])]
    assert b"".join(pieces) == PAYLOAD[:2000] and all(pieces) and framing.done
    framing.end()


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=20))
def test_a_read_per_chunk_gives_each_payload_whole(payloads):
    # A slow stream's every read is exactly one chunk: feed() has a shortcut for that shape.
    framing = ChunkedFraming()
    reads = [b"%x\r\n%s\r\n" % (len(p), p) for p in payloads] + [b"0\r\n\r\n"]
    assert [framing.feed(read) for read in reads] == [[p] for p in payloads] + [[]]
    assert framing.done


@pytest.mark.parametrize("wire", [b"zz\r\nab\r\n", b" 2\r\nab\r\n", b"2\r\nabXY", b"2\r\nab\r\n" + b"1" * 40 + b"\r\n",
                                  b"2" * 20_000])
def test_broken_chunked_framing_is_a_drop(wire):
    with pytest.raises(BodyDropped):
        ChunkedFraming().feed(wire)


def test_a_chunk_header_may_carry_extensions_and_trailing_space():
    framing = ChunkedFraming()
    assert framing.feed(b"3;name=value\r\nabc\r\n2  \r\nde\r\n0\r\n\r\n") == [b"abc", b"de"] and framing.done


@pytest.mark.parametrize("kind", ["chunked", "length", "close", "head-and-body-in-one-write", "informational-first"])
async def test_every_framing_is_read_straight_from_the_connection(kind):
    if kind == "chunked":
        head, writes = CHUNKED, [(0.01, chunked(PAYLOAD[i:i + 1000], 300)[:-5]) for i in range(0, len(PAYLOAD), 1000)]
        writes.append((0.01, b"0\r\n\r\n"))
    elif kind == "length":
        head = HEAD + b"content-length: %d\r\n\r\n" % len(PAYLOAD)
        writes = [(0.01, PAYLOAD[:5000]), (0.01, PAYLOAD[5000:])]
    elif kind == "close":
        head, writes = HEAD + b"connection: close\r\n\r\n", [(0.01, PAYLOAD[:5000]), (0.01, PAYLOAD[5000:])]
    elif kind == "head-and-body-in-one-write":
        head, writes = CHUNKED + chunked(PAYLOAD), []
    else:
        head, writes = b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\n" + CHUNKED + chunked(PAYLOAD[:300])[:-5], \
            [(0.01, chunked(PAYLOAD[300:]))]
    server, url = await serve(head, writes)
    async with server:
        body, _, direct = await read_all(url)
    assert body == PAYLOAD and direct


async def test_a_content_coding_is_read_through_httpx_and_decoded():
    compressed = gzip.compress(PAYLOAD)
    server, url = await serve(HEAD + b"content-encoding: gzip\r\ncontent-length: %d\r\n\r\n" % len(compressed),
                              [(0, compressed)])
    async with server:
        body, _, direct = await read_all(url)
    assert body == PAYLOAD and not direct


async def test_a_reader_that_asks_to_wait_gets_every_byte_in_order_after_each_wait():
    big = PAYLOAD * 40  # ~2 MiB: reads arrive while the reader waits
    server, url = await serve(CHUNKED, [(0, chunked(big, 7000))])
    async with server:
        body, waits, direct = await read_all(url, wait_every=3)
    assert body == big and direct and len(waits) > 10 and waits == sorted(waits)


async def test_a_connection_dropped_mid_body_is_an_upstream_error_after_what_arrived():
    server, url = await serve(CHUNKED, [(0, chunked(PAYLOAD[:1000])[:-5]), (0.02, b"40\r\npartial")], ending="drop")
    async with server:
        with pytest.raises(UpstreamError) as caught:
            await read_all(url)
    assert caught.value.code == "connection_dropped"
    assert "incomplete chunked read" in caught.value.message


async def test_a_body_shorter_than_its_length_is_a_drop():
    server, url = await serve(HEAD + b"content-length: 5000\r\n\r\n", [(0, PAYLOAD[:100])])
    async with server:
        with pytest.raises(UpstreamError) as caught:
            await read_all(url)
    assert caught.value.code == "connection_dropped" and "expected 5000" in caught.value.message


async def test_an_empty_body_on_a_connection_kept_open_ends_at_once():
    server, url = await serve(HEAD + b"content-length: 0\r\n\r\n", [], ending="hang")
    async with server:
        # Not a timing test: a body waiting for more would wait the whole 30 s stall limit.
        body, _waits, _direct = await asyncio.wait_for(read_all(url, stall=30.0), 10)
    assert body == b""


async def test_silence_for_the_stall_limit_is_a_stall():
    server, url = await serve(CHUNKED, [(0, chunked(PAYLOAD[:500])[:-5]), (0.1, b"5\r\nabcde\r\n")], ending="hang")
    async with server:
        with pytest.raises(UpstreamError) as caught:
            await read_all(url, stall=0.3)
    assert caught.value.code == "stalled"


async def test_bytes_that_keep_coming_are_no_stall():
    writes = [(0.1, b"2\r\n:\n\r\n")] * 8 + [(0, b"0\r\n\r\n")]  # 0.8 s in all, never 0.3 s of silence
    server, url = await serve(CHUNKED, writes)
    async with server:
        body, _, _ = await read_all(url, stall=0.3)
    assert body == b":\n" * 8


async def test_what_the_reader_raises_ends_the_read_and_is_raised_as_it_was():
    server, url = await serve(CHUNKED, [(0, chunked(PAYLOAD))], ending="hang")

    def on_bytes(data: bytes) -> bool:
        raise LookupError("the recorder refused")

    async with server, make_client(5, 5) as client:
        async with client.stream("GET", url) as response:
            with pytest.raises(LookupError, match="refused"):
                await read_body(response, 5, on_bytes, asyncio.sleep)


async def test_cancelling_the_reader_closes_the_connection():
    server, url = await serve(CHUNKED, [(0, chunked(PAYLOAD[:300])[:-5])], ending="hang")
    async with server, make_client(5, 5) as client:
        async with client.stream("GET", url) as response:
            stream = response.extensions["network_stream"]
            task = asyncio.create_task(read_body(response, 5, lambda data: False, asyncio.sleep))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert stream.get_extra_info("socket") is None or stream._transport.is_closing()


async def test_https_is_read_straight_from_the_connection_too(tls_files):
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    server, url = await serve(CHUNKED, [(0.01, chunked(PAYLOAD * 20, 5000))], ssl_context=server_context)
    url = url.replace("http://127.0.0.1", "https://localhost")
    trusting = ssl.create_default_context(cafile=str(cert))
    transport = httpx.AsyncHTTPTransport(verify=trusting)
    transport._pool = httpcore.AsyncConnectionPool(ssl_context=trusting, network_backend=AsyncioBackend())
    client = httpx.AsyncClient(transport=transport)
    async with server:
        body, waits, direct = await read_all(url, client=client, wait_every=2)
    assert body == PAYLOAD * 20 and direct and waits
