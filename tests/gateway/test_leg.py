"""The gateway's upstream leg (streams/gateway/leg.py): its request as written, the answer's head and
body however framed, kept connections, and every way a provider can fail raising the httpx exception
the gateway already handles. The gateway's own tests (test_sdk.py, test_errors.py ...) run the whole
leg against the simulator."""

from __future__ import annotations

import asyncio
import zlib

import httpx
import pytest

from streams.gateway import leg

HEAD_OK = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"


class Upstream:
    """A scripted HTTP/1.1 server: ``answer(request_bytes, reader, writer)`` answers each request
    (the head and a Content-Length body are read first); counts connections and keeps requests."""

    def __init__(self, answer) -> None:
        self.answer = answer
        self.connections = 0
        self.requests: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> Upstream:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        self.server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                if await self.answer(request, reader, writer) is False:
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()


async def send(url: str, path: str = "responses", body: bytes | None = b"{}", method: str = "POST",
               headers: dict[str, str] | None = None, stall: float = 5.0, query: str = "") -> leg.LegResponse:
    return await leg.send(url, method, path, query, headers or {"Content-Type": "application/json"}, body, 5.0, stall)


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


async def test_the_request_goes_as_written_and_a_chunked_answer_arrives_chunk_by_chunk():
    release = asyncio.Event()

    async def answer(request, reader, writer):
        first = chunked(b"data: 1\n\n")[:-5]  # the first chunk, not yet the last
        writer.write(HEAD_OK + b"transfer-encoding: chunked\r\nx-request-id: req_1\r\n\r\n" + first)
        await writer.drain()
        await release.wait()
        writer.write(b"a\r\ndata: 22\n\n\r\n0\r\n\r\n")

    async with Upstream(answer) as upstream:
        response = await send(upstream.url, body=b'{"model":"m"}', headers={
            "Content-Type": "application/json", "Authorization": "Bearer sk-x", "Accept": "text/event-stream"},
            query="stream=true&x=%20")
        assert response.status_code == 200 and response.headers["x-request-id"] == "req_1"
        chunks = response.aiter_bytes()
        assert await anext(chunks) == b"data: 1\n\n"  # before the rest of the body exists
        release.set()
        assert [chunk async for chunk in chunks] == [b"data: 22\n\n"]
    request = upstream.requests[0]
    head, _, body = request.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/responses?stream=true&x=%20 HTTP/1.1"
    assert f"Host: 127.0.0.1:{upstream.port}".encode() in lines
    assert b"Authorization: Bearer sk-x" in lines and b"Content-Length: 13" in lines
    assert body == b'{"model":"m"}'


async def test_a_connection_is_kept_for_the_next_request_once_an_answer_was_read_whole():
    async def answer(request, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with Upstream(answer) as upstream:
        for _ in range(3):
            response = await send(upstream.url)
            assert await response.aread() == b"ok"
        assert upstream.connections == 1 and len(upstream.requests) == 3


async def test_an_answer_left_unread_closes_its_connection():
    async def answer(request, reader, writer):
        writer.write(HEAD_OK + b"content-length: 10\r\n\r\n12345")  # half of it

    async with Upstream(answer) as upstream:
        response = await send(upstream.url)
        await response.aclose()
        response = await send(upstream.url)
        await response.aclose()
        assert upstream.connections == 2


async def test_a_body_that_ends_with_the_connection_ends_well():
    async def answer(request, reader, writer):
        writer.write(HEAD_OK + b"\r\ndata: a\n\ndata: b\n\n")
        await writer.drain()
        return False  # the server closes

    async with Upstream(answer) as upstream:
        response = await send(upstream.url)
        assert await response.aread() == b"data: a\n\ndata: b\n\n"


async def test_a_connection_cut_mid_body_is_a_remote_protocol_error():
    async def answer(request, reader, writer):
        writer.write(HEAD_OK + b"transfer-encoding: chunked\r\n\r\n" + b"9\r\ndata: 1\n\n\r\n")
        await writer.drain()
        return False

    async with Upstream(answer) as upstream:
        response = await send(upstream.url)
        got = []
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in response.aiter_bytes():
                got.append(chunk)
        assert got == [b"data: 1\n\n"]


async def test_a_provider_that_stops_sending_is_a_read_timeout():
    async def answer(request, reader, writer):
        writer.write(HEAD_OK + b"transfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(30)

    async with Upstream(answer) as upstream:
        response = await send(upstream.url, stall=0.2)
        with pytest.raises(httpx.ReadTimeout):
            await response.aread()

    async def silent(request, reader, writer):
        await asyncio.sleep(30)

    async with Upstream(silent) as upstream:
        with pytest.raises(httpx.ReadTimeout):
            await send(upstream.url, stall=0.2)


async def test_no_answer_before_the_connection_closes_and_a_malformed_answer_are_protocol_errors():
    async def hang_up(request, reader, writer):
        return False

    async def nonsense(request, reader, writer):
        writer.write(b"SMTP ready\r\n\r\n")

    for answer in (hang_up, nonsense):
        async with Upstream(answer) as upstream:
            with pytest.raises(httpx.RemoteProtocolError):
                await send(upstream.url)


async def test_nothing_listening_is_a_connect_error():
    upstream = Upstream(None)
    async with upstream:
        url = upstream.url
    with pytest.raises(httpx.ConnectError):
        await send(url)


@pytest.mark.parametrize(("method", "headers", "again"), [
    ("GET", {}, True),
    ("POST", {"Content-Type": "application/json", "Idempotency-Key": "k-1"}, True),
    ("POST", {"Content-Type": "application/json"}, False),
])
async def test_a_kept_connection_let_go_under_a_request_is_replaced_only_when_sending_twice_is_harmless(
        method, headers, again):
    async def answer(request, reader, writer):
        if len(upstream.requests) == 2:  # the second request came on the kept connection: read, then closed
            return False                 # unanswered (a server's idle timeout, or a crash after reading it)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")

    async with Upstream(answer) as upstream:
        assert await (await send(upstream.url)).aread() == b"ok"
        if again:
            response = await send(upstream.url, method=method, headers=headers, body=None)
            assert await response.aread() == b"ok"
            assert upstream.connections == 2 and len(upstream.requests) == 3
        else:  # the provider may have begun on it: never sent twice, the failure is the caller's
            with pytest.raises(httpx.RemoteProtocolError):
                await send(upstream.url, method=method, headers=headers)
            assert upstream.connections == 1 and len(upstream.requests) == 2


async def test_a_failure_on_a_new_connection_is_not_tried_again():
    async def answer(request, reader, writer):
        return False

    async with Upstream(answer) as upstream:
        with pytest.raises(httpx.RemoteProtocolError):
            await send(upstream.url, method="GET", body=None)
        assert len(upstream.requests) == 1


async def test_bytes_after_a_complete_answer_are_not_taken_into_it_and_the_connection_is_given_up():
    async def answer(request, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                     b"HTTP/1.1 500 Oops\r\ncontent-length: 3\r\n\r\nbad")

    async with Upstream(answer) as upstream:
        response = await send(upstream.url)
        assert await response.aread() == b"ok" and response.status_code == 200
        assert await (await send(upstream.url)).aread() == b"ok"
        assert upstream.connections == 2


async def test_a_compressed_answer_is_given_decoded_and_an_unknown_coding_is_an_error():
    import gzip

    body = b"data: " + b"x" * 5000 + b"\n\n"
    packed = gzip.compress(body)

    async def answer(request, reader, writer):
        coding = b"gzip" if len(upstream.requests) == 1 else b"br"
        writer.write(HEAD_OK + b"content-encoding: %s\r\ncontent-length: %d\r\n\r\n" % (coding, len(packed))
                     + packed)

    async with Upstream(answer) as upstream:
        assert await (await send(upstream.url)).aread() == body
        with pytest.raises(httpx.DecodingError):
            await (await send(upstream.url)).aread()


async def test_a_connection_is_not_kept_past_the_idle_time_the_provider_names():
    async def answer(request, reader, writer):
        writer.write(b"HTTP/1.1 200 OK\r\nkeep-alive: timeout=1\r\ncontent-length: 2\r\n\r\nok")

    async with Upstream(answer) as upstream:
        for _ in range(2):
            assert await (await send(upstream.url)).aread() == b"ok"
        assert upstream.connections == 2  # 1 s named: kept for none (a second under it)


async def test_an_interim_answer_is_skipped_and_error_answers_come_whole_with_their_headers():
    async def answer(request, reader, writer):
        body = b'{"error":{"message":"slow down"}}'
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n"
                     b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 7\r\ncontent-type: application/json\r\n"
                     b"content-length: %d\r\n\r\n%s" % (len(body), body))

    async with Upstream(answer) as upstream:
        response = await send(upstream.url)
        assert response.status_code == 429 and response.headers["retry-after"] == "7"
        assert await response.aread() == b'{"error":{"message":"slow down"}}'


async def test_a_big_body_arrives_whole_for_a_slow_reader():
    body = bytes(range(256)) * (4 * leg.HIGH_WATER // 256)  # 1 MiB: reading is paused and resumed

    async def answer(request, reader, writer):
        writer.write(HEAD_OK + b"content-length: %d\r\n\r\n" % len(body) + body)
        await writer.drain()

    async with Upstream(answer) as upstream:
        response = await send(upstream.url)
        received = bytearray()
        async for chunk in response.aiter_bytes():
            received += chunk
            await asyncio.sleep(0.001)
    assert len(received) == len(body) and zlib.crc32(received) == zlib.crc32(body)


def test_only_requests_it_can_write_as_they_are_take_this_leg():
    plain = {"Content-Type": "application/json", "Authorization": "Bearer sk-1"}
    assert leg.can_send("http://127.0.0.1:9000/sim/v1", "responses", "", plain)
    assert leg.can_send("https://api.openai.com/v1", "responses/resp_1", "stream=true&starting_after=3", plain)
    assert not leg.can_send("http://user:pw@host/v1", "responses", "", plain)
    assert not leg.can_send("ftp://host/v1", "responses", "", plain)
    assert not leg.can_send("http://host/v1", "responses", "q=ä", plain)
    assert not leg.can_send("http://host/v1", "responses", "a b", plain)
    assert not leg.can_send("http://host/v1", "responses/a b", "", plain)
    assert not leg.can_send("http://host/v1", "responses", "", {"Authorization": "Bearer x\r\nX-Evil: 1"})
    assert not leg.can_send("http://host/v1", "responses", "", {"Bad Name": "x"})
    assert not leg.can_send("http://host/a b/v1", "responses", "", plain)
    assert not leg.can_send("http://host/vä", "responses", "", plain)


def test_the_request_head_names_the_host_and_the_body_length_once():
    head = leg.request_head("https://api.example.com/v1/", "POST", "chat/completions", "",
                            {"content-length": "999", "Accept": "*/*"}, b"12345")
    assert head == (b"POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\n"
                    b"User-Agent: streamscope-gateway\r\nAccept: */*\r\nContent-Length: 5\r\n\r\n")
    head = leg.request_head("http://[::1]:8000", "GET", "responses/resp_1", "stream=true", {}, None)
    assert head.startswith(b"GET /responses/resp_1?stream=true HTTP/1.1\r\nHost: [::1]:8000\r\n")
    assert b"Content-Length" not in head
