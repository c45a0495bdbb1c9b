"""httpx's private transport pool, which streams/upstream/httpx_shim.py replaces: fail loudly if an
httpx upgrade moves it, instead of silently streaming on anyio's slower backend."""

import httpcore
import httpx

from streams.upstream.asyncio_backend import AsyncioBackend
from streams.upstream.httpx_shim import pooled_transport


def test_httpx_transport_still_keeps_its_pool_in_the_private_attribute():
    transport = httpx.AsyncHTTPTransport()
    assert isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool), (
        "httpx.AsyncHTTPTransport no longer has _pool: streams/upstream/httpx_shim.py must change"
    )


def test_the_shim_puts_our_backend_under_the_pool():
    transport = pooled_transport()
    assert isinstance(transport._pool._network_backend, AsyncioBackend)
