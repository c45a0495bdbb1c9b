"""Serve a simulator request straight from ASGI, without Django's handler and middleware.

Used when the simulator's gate is open (a simulator-only process, ``STREAMSCOPE_SIMULATOR_OPEN=1``;
``dashboard.simulator_gate`` decides): nobody is authenticated or metered there, so Django's
request machinery has nothing to do, yet it costs each request a thread (sync middleware, the
request signals) and each chunk of a stream a few layers of wrappers. Here the request is read
from ASGI, routed with the simulator's own URLs and given to the very same views, and their
response is sent as is: same bytes, statuses and headers (plus the ones the caller adds, the
security headers Django's middleware would have set).
"""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpResponse, JsonResponse
from django.urls import Resolver404, URLResolver
from django.urls.resolvers import RegexPattern

from simulator.playback import write_paced

logger = logging.getLogger("simulator")

PREFIX = "/sim/v1/"
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_RESOLVER = URLResolver(RegexPattern(r"^" + PREFIX), "simulator.urls")


class ClientLeft(Exception):
    """The client disconnected before its request body arrived."""


class BodyTooLarge(Exception):
    """The request body is larger than Django would read (``DATA_UPLOAD_MAX_MEMORY_SIZE``)."""


async def serve_asgi(scope: dict[str, Any], receive: Receive, send: Send, headers: dict[str, str]) -> None:
    """Answer one HTTP request under ``/sim/v1/``; ``headers`` are added to the response."""
    try:
        body = await _read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    except ClientLeft:
        return
    except BodyTooLarge:
        await _send(_error(413, "The request body is too large.", "invalid_request_error"), send, headers)
        return
    await serve(ASGIRequest(scope, io.BytesIO(body)), receive, send, headers)


async def _read_body(receive: Receive, limit: int | None) -> bytes:
    parts = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientLeft
        part = message.get("body", b"")
        size += len(part)
        if limit is not None and size > limit:
            raise BodyTooLarge
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def serve(request: ASGIRequest, receive: Receive, send: Send, headers: dict[str, str]) -> None:
    """Answer one request; stop sending (and so stop generating) when the client leaves."""
    responding = asyncio.ensure_future(_respond(request, send, headers))
    listening = asyncio.ensure_future(_wait_for_disconnect(receive))
    try:
        await asyncio.wait((responding, listening), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (listening, responding):
            if not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
    if responding.done() and not responding.cancelled():
        responding.result()


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _respond(request: ASGIRequest, send: Send, extra: dict[str, str]) -> None:
    await _send(await _response(request), send, extra)


async def _send(response: HttpResponse, send: Send, extra: dict[str, str]) -> None:
    for name, value in extra.items():
        response.setdefault(name, value)
    headers = [(name.encode("latin1"), value.encode("latin1")) for name, value in response.items()]
    await send({"type": "http.response.start", "status": response.status_code, "headers": headers})
    if not response.streaming:
        await send({"type": "http.response.body", "body": response.content})
        return
    playback = getattr(response, "simulator_playback", None)
    if playback is not None:  # a plain stream: written from the shared clock (simulator.playback)
        await write_paced(playback, send)
        await send({"type": "http.response.body"})
        return
    async for chunk in response.streaming_content:
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body"})


async def _response(request: ASGIRequest) -> HttpResponse:
    try:
        request.get_host()  # what Django checks: a host outside ALLOWED_HOSTS is refused
    except DisallowedHost:
        return _error(400, "Invalid host header.", "invalid_request_error")
    try:
        match = _RESOLVER.resolve(request.path_info)
    except Resolver404:
        return _error(404, f"Invalid URL ({request.method} {request.path})", "invalid_request_error")
    try:
        return await match.func(request, *match.args, **match.kwargs)
    except Exception:
        logger.exception("simulator view failed: %s %s", request.method, request.path)
        return _error(500, "The simulator failed; see its log.", "server_error")


def _error(status: int, message: str, kind: str) -> JsonResponse:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return JsonResponse(body, status=status)
