"""The upstream clients' asyncio network backend (streams/upstream/asyncio_backend.py) under httpcore/httpx:
TLS, flow control on big bodies, and the errors httpx must keep raising. The runner's tests
(tests/live/test_executor.py) cover stalls, drops and refused connections through the same client."""

from __future__ import annotations

import asyncio
import ssl
import zlib

import httpcore
import httpx
import pytest

from streams.upstream.asyncio_backend import HIGH_WATER, AsyncioBackend
from streams.upstream.client import make_client


async def start_server(body: bytes, ssl_context: ssl.SSLContext | None = None, close_after: int | None = None):
    """A one-response-per-connection HTTP/1.1 server; yields (server, port)."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (await reader.readline()) not in (b"\r\n", b""):
            pass
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n")
        if close_after is None:
            writer.write(b"content-length: %d\r\n\r\n" % len(body) + body)
        else:  # promise the whole body, send part of it, hang up
            writer.write(b"content-length: %d\r\n\r\n" % len(body) + body[:close_after])
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


async def test_a_body_bigger_than_the_buffer_arrives_whole_for_a_slow_reader():
    body = bytes(range(256)) * (4 * HIGH_WATER // 256)  # 1 MiB: the transport is paused and resumed
    server, port = await start_server(body)
    async with server, make_client(5, 5) as client:
        received = bytearray()
        async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
            async for chunk in response.aiter_raw():
                received += chunk
                await asyncio.sleep(0.001)
    assert zlib.crc32(received) == zlib.crc32(body) and len(received) == len(body)


async def test_a_connection_cut_mid_body_is_an_httpx_transport_error():
    server, port = await start_server(b"x" * 10_000, close_after=100)
    async with server, make_client(5, 5) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("GET", f"http://127.0.0.1:{port}/") as response:
                async for _ in response.aiter_raw():
                    pass


async def test_nothing_listening_is_a_connect_error():
    async with make_client(2, 2) as client:
        server, port = await start_server(b"")
        server.close()
        await server.wait_closed()
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/")


async def test_https_goes_through_the_tls_handshake_and_checks_the_certificate(tls_files):
    cert, key = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert, key)
    body = b'data: {"type":"response.created"}\n\n' * 100
    server, port = await start_server(body, ssl_context=server_context)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with server:
        async with httpcore.AsyncConnectionPool(ssl_context=trusting, network_backend=AsyncioBackend()) as pool:
            async with pool.stream("GET", f"https://localhost:{port}/") as response:
                assert response.extensions["network_stream"].get_extra_info("ssl_object") is not None
                content = b"".join([chunk async for chunk in response.aiter_stream()])
            assert response.status == 200 and content == body
        # The same server with the system's trust store: an unknown certificate is refused.
        async with make_client(5, 5) as client:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.get(f"https://localhost:{port}/")
