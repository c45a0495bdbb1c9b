"""The one place Streamscope reaches into httpx's private parts: the transport's connection pool.

httpx has no argument for httpcore's network backend, so :func:`pooled_transport` replaces the
pool httpx built (``AsyncHTTPTransport._pool``) with an equal one on our asyncio backend (a
cheaper read per event than anyio's). httpx is pinned to the minor version this was written
against (pyproject.toml); ``tests/upstream/test_shims.py`` fails loudly if the attribute changes.
"""

from __future__ import annotations

import functools
import ssl

import httpcore
import httpx

from streams.upstream.asyncio_backend import AsyncioBackend


@functools.cache
def tls_context() -> ssl.SSLContext:
    # Building a context loads the CA bundle, which is slow CPU work on the event loop, and runs
    # starting together paid it each (docs/performance.md). One shared, read-only context serves all
    # (the gateway's own upstream connections too, streams/gateway/leg.py).
    return httpx.create_ssl_context(trust_env=False)


def pooled_transport() -> httpx.AsyncHTTPTransport:
    """httpx's transport with its connection pool on our asyncio network backend."""
    transport = httpx.AsyncHTTPTransport(verify=tls_context(), trust_env=False)
    transport._pool = httpcore.AsyncConnectionPool(
        ssl_context=tls_context(),
        max_connections=100,  # httpx's default limits
        max_keepalive_connections=20,
        keepalive_expiry=5.0,
        http1=True,
        http2=False,
        network_backend=AsyncioBackend(),
    )
    return transport
