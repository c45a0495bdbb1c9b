"""Who may call the built-in simulator (``/sim/``), and how much of it one caller gets.

The simulator streams tens of thousands of tokens or holds a connection for minutes on request, so
it is never open to strangers: with ``STREAMSCOPE_SIMULATOR_ENABLED`` off (production's default)
it answers 404; on, a caller needs a session, a personal API token, or this deployment's internal
key (:func:`streams.upstream.providers.simulator_key`, what the server's own runs send). A
person's streams are bounded in number and in frames per second. Refusals are OpenAI-shaped
error JSON, so SDKs show them plainly.

With ``STREAMSCOPE_SIMULATOR_OPEN=1`` (a simulator-only process: a load generator, the benchmarks'
upstream) there is nobody to check or meter, and :class:`OpenSimulatorASGI` serves ``/sim/v1/``
straight from ASGI (:mod:`simulator.asgi`) instead of through Django's handler and middleware.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from channels.db import database_sync_to_async
from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from dashboard.api.common import openai_error
from dashboard.middleware import is_secure, request_headers, security_headers
from dashboard.tokens import authenticate_token, authorization_bearer
from simulator.asgi import PREFIX as API_PREFIX
from simulator.asgi import serve_asgi
from streams.upstream.providers import simulator_key

PREFIX = "/sim/"
SERVER = "server"


def openai_refusal(message: str, status: int, code: str) -> JsonResponse:
    return openai_error(message, status, code, "rate_limit_exceeded" if status == 429 else "invalid_request_error")


class CallerBudget:
    """Open streams and a frame-rate bucket per caller, in this process."""

    def __init__(self) -> None:
        self.open_streams: dict[str, int] = defaultdict(int)
        self.buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, last refill)

    async def take_frame(self, caller: str) -> None:
        rate = settings.STREAMSCOPE_SIMULATOR_MAX_FRAMES_PER_S
        while True:
            now = time.monotonic()
            tokens, last = self.buckets.get(caller, (rate, now))
            tokens = min(rate, tokens + (now - last) * rate)
            if tokens >= 1:
                self.buckets[caller] = (tokens - 1, now)
                return
            self.buckets[caller] = (tokens, now)
            await asyncio.sleep((1 - tokens) / rate)

    def open(self, caller: str, response: HttpResponse) -> None:
        """Count a stream as open until the server closes its response (also when the client left
        before the first byte), and meter its frames."""
        self.open_streams[caller] += 1
        counted = [True]
        server_close = response.close

        def close() -> None:
            if counted.pop() if counted else False:
                self.open_streams[caller] -= 1
                if self.open_streams[caller] <= 0:
                    del self.open_streams[caller]
            server_close()

        response.close = close  # the server calls it once the response is done or abandoned
        response.streaming_content = self.metered(caller, aiter(response.streaming_content))

    async def metered(self, caller: str, content: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for chunk in content:
            await self.take_frame(caller)
            yield chunk


BUDGET = CallerBudget()


async def caller_of(request: HttpRequest) -> str | None:
    """``"server"`` for the internal key, ``"user:<id>"`` for a token or session, else None."""
    secret = authorization_bearer(request)
    if secret:
        if hmac.compare_digest(secret.encode(), simulator_key().encode()):
            return SERVER
        token = await database_sync_to_async(authenticate_token)(secret)
        if token is not None:
            return f"user:{token.owner_id}"
    user = await request.auser()
    if user.is_authenticated:
        return f"user:{user.pk}"
    return None


class SimulatorGateMiddleware:
    sync_capable = False
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        if iscoroutinefunction(get_response):
            markcoroutinefunction(self)

    async def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path.startswith(PREFIX):
            return await self.get_response(request)
        if not settings.STREAMSCOPE_SIMULATOR_ENABLED:
            return openai_refusal("The built-in simulator is off on this server (STREAMSCOPE_SIMULATOR=1 turns "
                                  "it on).", 404, "simulator_off")
        if settings.STREAMSCOPE_SIMULATOR_OPEN:
            return await self.get_response(request)
        caller = await caller_of(request)
        if caller is None:
            return openai_refusal("The simulator needs a Streamscope API token (Authorization: Bearer <token>, "
                                  "made at /settings/tokens/) or a logged-in session.", 401, "invalid_api_key")
        if caller != SERVER and BUDGET.open_streams[caller] >= settings.STREAMSCOPE_SIMULATOR_MAX_STREAMS:
            return openai_refusal(f"You already have {BUDGET.open_streams[caller]} simulator streams open; the limit "
                                  f"is {settings.STREAMSCOPE_SIMULATOR_MAX_STREAMS}.", 429, "too_many_streams")
        response = await self.get_response(request)
        if caller != SERVER and getattr(response, "streaming", False):
            BUDGET.open(caller, response)
        return response


class OpenSimulatorASGI:
    """ASGI: with the gate open, ``/sim/v1/`` requests served past Django (the views are the same,
    so are the bytes; the security headers are added as the middleware would); everything else,
    and every request while the gate is closed, goes to ``app``."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if not _served_open(scope):
            return await self.app(scope, receive, send)
        await serve_asgi(scope, receive, send, security_headers(is_secure(scope, request_headers(scope))))


def _served_open(scope: dict) -> bool:
    return (scope["type"] == "http" and scope["path"].startswith(API_PREFIX) and not scope.get("root_path")
            and settings.STREAMSCOPE_SIMULATOR_ENABLED and settings.STREAMSCOPE_SIMULATOR_OPEN
            and not (settings.SECURE_SSL_REDIRECT and not is_secure(scope, request_headers(scope))))
