"""The HTTP side of a run: one streaming request to an OpenAI-compatible server over httpx.

Turns every way a request can go wrong into an :class:`UpstreamError` that says what happened
in words a person can act on; the runner records it on the run.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx

from streams.upstream.asyncio_backend import AsyncioStream
from streams.upstream.body import (
    BodyDropped,
    BodyStalled,
    ChunkedFraming,
    CloseFraming,
    Framing,
    LengthFraming,
    StreamedBody,
)
from streams.upstream.httpx_shim import pooled_transport
from streams.upstream.providers import Provider

ERROR_BODY_LIMIT = 64 * 1024


class UpstreamError(Exception):
    """The upstream failed; ``code`` is a short machine word, the message a sentence."""

    def __init__(self, message: str, code: str, http_status: int | None = None, body: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.http_status = http_status
        self.body = body

    def as_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.http_status is not None:
            error["http_status"] = self.http_status
        if self.body is not None:
            error["body"] = self.body
        return error


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def make_client(connect_timeout: float, stall_timeout: float) -> httpx.AsyncClient:
    # read= is the stall limit: the longest wait for the next bytes of the body.
    timeout = httpx.Timeout(connect=connect_timeout, read=stall_timeout, write=30.0, pool=connect_timeout)
    return httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False, transport=pooled_transport())


async def _read_error_body(response: httpx.Response) -> Any:
    raw = bytearray()
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > ERROR_BODY_LIMIT:
            break
    text = bytes(raw[:ERROR_BODY_LIMIT]).decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def _http_error_message(status: int, body: Any) -> str:
    detail = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            detail = error.get("message")
        elif isinstance(error, str):
            detail = error
    reason = httpx.codes.get_reason_phrase(status) or "error"
    return f"upstream answered HTTP {status} {reason}" + (f": {detail}" if detail else "")


@asynccontextmanager
async def open_stream(
    client: httpx.AsyncClient,
    provider: Provider,
    *,
    method: str = "POST",
    url: str | None = None,
    body: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
) -> AsyncIterator[httpx.Response]:
    """Send the request and yield the streaming response once it is known to be a stream."""
    target = url or provider.stream_url
    request = client.build_request(method, target, json=body, params=params, headers=provider.headers())
    try:
        response = await client.send(request, stream=True)
    except httpx.ConnectTimeout as exc:
        raise UpstreamError(f"timed out connecting to {_where(target)}", "connect_timeout") from exc
    except httpx.ConnectError as exc:
        raise UpstreamError(f"could not connect to {_where(target)}: {exc}", "connect_error") from exc
    except httpx.ReadTimeout as exc:
        raise UpstreamError(
            f"no response headers from {_where(target)} within the stall limit", "stalled"
        ) from exc
    except httpx.TransportError as exc:
        raise UpstreamError(f"connection to {_where(target)} failed: {exc!r}", "connection_error") from exc
    try:
        if response.status_code >= 400:
            error_body = await _read_error_body(response)
            raise UpstreamError(
                _http_error_message(response.status_code, error_body),
                "http_error",
                http_status=response.status_code,
                body=error_body,
            )
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type == "application/json":
            error_body = await _read_error_body(response)
            raise UpstreamError(
                "upstream answered with a JSON document instead of an event stream "
                "(was stream: true ignored?)",
                "not_a_stream",
                http_status=response.status_code,
                body=error_body,
            )
        yield response
    finally:
        await response.aclose()


async def iter_body(response: httpx.Response, stall_timeout: float) -> AsyncIterator[bytes]:
    """The body's chunks, with transport failures turned into UpstreamError."""
    try:
        async for chunk in response.aiter_bytes():
            yield chunk
    except httpx.ReadTimeout as exc:
        raise UpstreamError(
            f"upstream sent no bytes for {stall_timeout:g} s; the run was ended as stalled", "stalled"
        ) from exc
    except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
        raise UpstreamError(f"the upstream connection dropped mid-stream ({exc})", "connection_dropped") from exc
    except httpx.TransportError as exc:
        raise UpstreamError(f"the upstream connection failed mid-stream ({exc!r})", "connection_error") from exc


async def read_body(response: httpx.Response, stall_timeout: float, on_bytes: Callable[[bytes], bool],
                    on_wait: Callable[[], Awaitable[object]]) -> None:
    """The whole body to ``on_bytes`` as it arrives; when that returns True, ``await on_wait()``
    before reading on. Failures are the UpstreamErrors :func:`iter_body` raises.

    A body on our asyncio backend is read straight from its connection (streams/upstream/body.py:
    no coroutine wakes per read); any other (a content coding, another backend) through httpx.
    """
    body = _streamed_body(response, stall_timeout)
    if body is None:
        async for chunk in iter_body(response, stall_timeout):
            if on_bytes(chunk):
                await on_wait()
        return
    try:
        await body.read(on_bytes, on_wait)
    except BodyStalled as exc:
        raise UpstreamError(
            f"upstream sent no bytes for {stall_timeout:g} s; the run was ended as stalled", "stalled"
        ) from exc
    except BodyDropped as exc:
        raise UpstreamError(f"the upstream connection dropped mid-stream ({exc})", "connection_dropped") from exc


def _streamed_body(response: httpx.Response, stall_timeout: float) -> StreamedBody | None:
    """A reader of the body straight from the connection, when it can take over from httpx."""
    stream = response.extensions.get("network_stream")
    if not isinstance(stream, AsyncioStream) or stream.body_taken():
        return None  # another backend, or httpcore holds some of the body already
    headers = response.headers
    if headers.get("content-encoding", "identity").strip().lower() not in ("", "identity"):
        return None  # httpx decodes gzip and friends
    if not 200 <= response.status_code < 300 or response.status_code == 204:
        return None
    framing: Framing
    coding = headers.get("transfer-encoding")
    if coding is not None:
        if coding.strip().lower() != "chunked":
            return None
        framing = ChunkedFraming()
    elif "content-length" in headers:
        try:
            framing = LengthFraming(int(headers["content-length"]))
        except ValueError:
            return None
    else:
        framing = CloseFraming()
    return StreamedBody(stream, framing, stall_timeout)
