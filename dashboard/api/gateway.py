"""The recording gateway's HTTP face: ``/gateway/<provider>/v1/...`` (streams/gateway/, docs/gateway.md).

SDKs call it with ``Authorization: Bearer <Streamscope API token>``; everything it answers is
OpenAI-shaped, its own refusals included. Only a token signs a caller in here (no session, so no
CSRF to check).

Two ways in, one answer (:func:`answer`): :class:`GatewayASGI` takes gateway requests straight from
the server (dashboard/asgi.py), past Django's request handling, and sends each upstream chunk on the
connection from the loop that reads it; the Django view :func:`proxy` serves the same requests
through Django's handler (the test client, and any request the direct path leaves to Django).
Django's handler costs a gateway request several milliseconds before its first byte: the
``request_started`` receivers and WhiteNoise's sync-only middleware each hop to a thread, and the
token lookup runs on a thread of the request's own, which opens a new database connection
(docs/performance.md, "The recording gateway").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from typing import Any

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.http.request import split_domain_port, validate_host
from django.views.decorators.csrf import csrf_exempt

from dashboard.middleware import INTERNAL_ERROR, is_secure, request_headers, security_headers
from dashboard.pacing import ClientGone, client_caught_up, far_behind
from dashboard.tokens import REJECTED, bearer_of, token_owner
from dashboard.twisted_shim import send_at_once, transport_of
from streams.gateway.proxy import (
    GatewayAnswer,
    GatewayRequest,
    UnknownRoute,
    forward,
    openai_error_body,
    route_kind,
)
from streams.gateway.proxy import timing as proxy_timing
from streams.upstream.providers import UnknownProvider, get_provider

log = logging.getLogger(__name__)

CALLER_KEY_HEADER = "X-Upstream-Authorization"
MISSING_TOKEN = ("Send a Streamscope API token as the API key (Authorization: Bearer <token>); "
                 "make one at /settings/tokens/.")
# The client's headers that never go further than this module (the upstream gets a chosen few).
PRIVATE_HEADERS = ("authorization", CALLER_KEY_HEADER.lower(), "cookie")
STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DJANGO_DEFAULT_TYPE = "text/html; charset=utf-8"  # what Django would send when the provider names none
# A client slower than its provider: past dashboard.pacing's HIGH_WATER unsent on the client's
# connection the relay waits before its next chunk (the leg stops reading; TCP holds the provider).


def refusal(message: str, status: int, code: str) -> GatewayAnswer:
    return GatewayAnswer(status, {"content-type": "application/json"},
                         openai_error_body(message, "invalid_request_error", code))


async def answer(method: str, provider: str, path: str, query: str, headers: dict[str, str], body: bytes | None,
                 owner: Any, rejected: str | None) -> GatewayAnswer:
    """What the gateway answers a request. ``headers`` are the client's (lower-cased names),
    ``body`` None when it was too large, ``owner`` the token's user (None: ``rejected`` says why)."""
    if owner is None:
        return refusal(rejected or MISSING_TOKEN, 401, "invalid_api_key")
    try:
        upstream = get_provider(provider)
    except UnknownProvider:
        return refusal(f"No provider named {provider!r} on this Streamscope.", 404, "unknown_provider")
    try:
        route_kind(method, path)
    except UnknownRoute as exc:
        return refusal(str(exc), 404, "unknown_url")
    caller_key = None
    if upstream.gateway_key == "caller":
        caller_key = headers.get(CALLER_KEY_HEADER.lower(), "").strip() or None
        if caller_key is None:
            return refusal(f"The provider {provider!r} takes your own key: send it as "
                           f"{CALLER_KEY_HEADER}: Bearer <your {provider} key>.", 401, "missing_upstream_key")
    if body is None:
        return refusal("The request body is too large for this server.", 413, "body_too_large")
    return await forward(GatewayRequest(
        provider=upstream, method=method, path=path, query=query, body=body, owner=owner, caller_key=caller_key,
        headers={name: value for name, value in headers.items() if name not in PRIVATE_HEADERS},
    ))


# --- through Django ----------------------------------------------------------------------------

@login_not_required
@csrf_exempt
async def proxy(request: HttpRequest, provider: str, path: str) -> HttpResponse:
    token = getattr(request, "api_token", None)  # dashboard.tokens.BearerTokenMiddleware
    try:
        body: bytes | None = request.body if token is not None else b""
    except RequestDataTooBig:
        body = None
    reply = await answer(request.method or "GET", provider, path, request.META.get("QUERY_STRING", ""),
                         {name.lower(): value for name, value in request.headers.items()}, body,
                         token.owner if token is not None else None, getattr(request, "bearer_rejected", None))
    if reply.relay is not None:
        response: HttpResponse = StreamingHttpResponse(reply.relay.body(), status=reply.status)
        for name, value in STREAM_HEADERS.items():
            response[name] = value
    else:
        response = HttpResponse(reply.body, status=reply.status)
    for name, value in reply.headers.items():
        response[name] = value
    return response


# --- straight from the server --------------------------------------------------------------------

GATEWAY_PATH = re.compile(r"/gateway/([^/]+)/v1/(.+)")  # dashboard/urls.py's route, as a pattern


class GatewayASGI:
    """ASGI: gateway requests to the gateway directly; everything else to ``app`` (Django).

    A gateway request is left to Django when Django would judge it differently from here: a host
    not in ALLOWED_HOSTS (Django's 400), plain HTTP under SECURE_SSL_REDIRECT (Django's redirect),
    forwarded hosts, a script prefix. What Django's middleware adds to every response, the
    security headers, this adds too (:func:`dashboard.middleware.security_headers`)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = direct_route(scope) if scope["type"] == "http" else None
        if route is None:
            return await self.app(scope, receive, send)
        await DirectRequest(scope, receive, send, *route).serve()


def direct_route(scope: dict) -> tuple[str, str, dict[str, str], bool] | None:
    """(provider, path, headers, secure) of a gateway request this path serves, else None."""
    match = GATEWAY_PATH.fullmatch(scope.get("path", ""))
    if match is None or scope.get("root_path") or settings.USE_X_FORWARDED_HOST:
        return None
    headers = request_headers(scope)
    host = headers.get("host", "")
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS or ([".localhost", "127.0.0.1", "[::1]"] if settings.DEBUG else [])
    if not domain or not validate_host(domain, allowed):
        return None
    secure = is_secure(scope, headers)
    if settings.SECURE_SSL_REDIRECT and not secure:
        return None
    return match[1], match[2], headers, secure


class DirectRequest:
    """One gateway request served on the ASGI connection: the token checked without opening a
    connection (dashboard.tokens.token_owner), each chunk of a stream sent from the loop that
    reads it, and the client leaving (``http.disconnect``) ends the relay."""

    def __init__(self, scope: dict, receive: Any, send: Any, provider: str, path: str, headers: dict[str, str],
                 secure: bool) -> None:
        self.scope, self.receive, self.send = scope, receive, send
        self.provider, self.path, self.headers, self.secure = provider, path, headers, secure
        self.started = False  # the response's headers were sent
        self.transport: Any = None  # Daphne's Twisted transport for the client's connection, once known
        self.timing = Timing() if settings.STREAMSCOPE_GATEWAY_TIMINGS else None

    async def serve(self) -> None:
        body = await self.read_body()
        if body is False:
            return  # the client left before its request was whole
        work = asyncio.get_running_loop().create_task(self.respond(body))
        gone = asyncio.get_running_loop().create_task(self.wait_for_disconnect())
        try:
            await asyncio.wait([work, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (gone, work):
                if not task.done():
                    task.cancel()
            await asyncio.gather(work, gone, return_exceptions=True)
        failure = None if work.cancelled() else work.exception()
        if failure is not None:  # past respond()'s own handling: say so, and answer if nothing was sent
            log.error("%s %s failed", self.scope["method"], self.scope["path"], exc_info=failure)
            if not self.started:
                with contextlib.suppress(Exception):
                    await self.start(GatewayAnswer(500, {"content-type": "application/json"}, b""), {})
                    await self.send({"type": "http.response.body", "body": json.dumps(INTERNAL_ERROR).encode()})
        if self.timing is not None:
            self.timing.write()

    async def read_body(self) -> bytes | None | bool:
        """The body; None when larger than DATA_UPLOAD_MAX_MEMORY_SIZE, False when the client left."""
        limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
        parts: list[bytes] = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                return False
            chunk = message.get("body", b"")
            size += len(chunk)
            if limit is None or size <= limit:
                parts.append(chunk)
            if not message.get("more_body"):
                break
        return b"".join(parts) if limit is None or size <= limit else None

    async def wait_for_disconnect(self) -> None:
        while (await self.receive())["type"] != "http.disconnect":
            pass

    async def respond(self, body: bytes | None) -> None:
        try:
            secret = bearer_of(self.headers.get("authorization"))
            owner = await token_owner(secret) if secret else None
            if self.timing is not None:
                self.timing.mark("token")
                proxy_timing.set(self.timing.mark)
            reply = await answer(self.scope["method"], self.provider, self.path,
                                 self.scope.get("query_string", b"").decode("latin1"), self.headers, body,
                                 owner, REJECTED if secret is not None else None)
        except Exception:
            log.exception("%s %s failed", self.scope["method"], self.scope["path"])
            reply = GatewayAnswer(500, {"content-type": "application/json"}, json.dumps(INTERNAL_ERROR).encode())
        if reply.relay is None:
            await self.start(reply, {"content-length": str(len(reply.body))})
            await self.send({"type": "http.response.body", "body": reply.body})
            return
        await self.start(reply, STREAM_HEADERS)
        try:
            await reply.relay.relay(self.send_chunk, self.send_now)
        except ClientGone:
            return  # let go (logged); the run ends cancelled, as for any client that left
        except Exception:
            log.exception("%s %s: relaying failed", self.scope["method"], self.scope["path"])
        await self.send({"type": "http.response.body", "body": b""})

    async def start(self, reply: GatewayAnswer, extra: dict[str, str]) -> None:
        headers = {**extra, **reply.headers}
        if "content-type" not in headers:
            headers["content-type"] = DJANGO_DEFAULT_TYPE
        for name, value in security_headers(self.secure).items():
            headers.setdefault(name, value)
        transport = self.transport = transport_of(self.send)
        if transport is not None:
            send_at_once(transport)  # each chunk to the socket as it is sent, not on Twisted's next turn
        self.started = True
        await self.send({"type": "http.response.start", "status": reply.status,
                         # An upstream header httpx decoded as UTF-8 may not fit latin-1: "?" for the rest.
                         "headers": [(name.encode("latin1", "replace"), str(value).encode("latin1", "replace"))
                                     for name, value in headers.items()]})
        if self.timing is not None:
            self.timing.mark("headers")

    async def send_chunk(self, chunk: bytes) -> None:
        if far_behind(self.transport):
            # Before the write: a cancel here sent nothing; ClientGone ends the relay (the client left).
            await client_caught_up(self.transport, self.scope["path"])
        await self.send_now(chunk)

    async def send_now(self, chunk: bytes) -> None:
        """The chunk to Daphne at once, however far behind the client is (a stop's last event)."""
        await self.send({"type": "http.response.body", "body": chunk, "more_body": True})
        if self.timing is not None and "first_byte" not in self.timing.marks:
            self.timing.mark("first_byte")


class Timing:
    """Where a direct gateway request's time went, in milliseconds from the server handing it over,
    and the process's CPU meanwhile; one JSON line per request appended to the file named by
    STREAMSCOPE_GATEWAY_TIMINGS (set by bench/gateway.py; off by default)."""

    def __init__(self) -> None:
        self.t0, self.cpu0, self.at = time.perf_counter(), time.process_time(), time.time()
        self.marks: dict[str, float] = {}

    def mark(self, what: str) -> None:
        self.marks[what] = (time.perf_counter() - self.t0) * 1000.0

    def write(self) -> None:
        self.mark("end")
        line = json.dumps({**self.marks, "cpu": (time.process_time() - self.cpu0) * 1000.0, "at": self.at})
        with open(settings.STREAMSCOPE_GATEWAY_TIMINGS, "a") as out:
            out.write(line + "\n")
