"""What every API view shares: the JSON error shape, login and method checks, body parsing."""

from __future__ import annotations

from functools import wraps
from typing import Any

from asgiref.sync import iscoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse

from streams.protocol import values


def error(message: str, code: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "code": code, **extra}}, status=status)


def openai_error(message: str, status: int, code: str | None = None, kind: str = "invalid_request_error",
                 param: str | None = None) -> JsonResponse:
    """An error in OpenAI's shape, for callers that are OpenAI SDKs (gateway, replay, simulator)."""
    return JsonResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status)


def run_not_found() -> JsonResponse:
    return error("no such run (or it is not yours)", "not_found", 404)


def api_view(*methods: str):
    """Login (JSON 401, not a redirect) and allowed methods for an API view.

    A session or an API token (``Authorization: Bearer``, see dashboard/tokens.py) signs a caller in.
    An ``async`` view gets the caller's user loaded first (a hop to the request's thread). A plain
    function, for a view whose work is all database reads, runs on the request's thread with the
    user loaded there too: one hop for the whole request instead of two or more.
    """

    def decorate(view):
        if iscoroutinefunction(view):
            async def call(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                user = await request.auser()
                if not user.is_authenticated:
                    return not_authenticated()
                request.user = user
                return await view(request, *args, **kwargs)
        else:
            def signed_in(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
                if not request.user.is_authenticated:  # loads the session and the user here, on this thread
                    return not_authenticated()
                return view(request, *args, **kwargs)

            call = sync_to_async(signed_in, thread_sensitive=True)

        @login_not_required
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error(f"method {request.method} not allowed here", "method_not_allowed", 405)
            rejected = getattr(request, "bearer_rejected", None)  # dashboard.tokens.BearerTokenMiddleware
            if rejected:
                return error(rejected, "invalid_token", 401)
            return await call(request, *args, **kwargs)

        return wrapper

    return decorate


def not_authenticated() -> JsonResponse:
    return error("log in first (session cookie) or send Authorization: Bearer <API token>", "not_authenticated", 401)


def json_object_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    """The request's JSON object, or the JSON error response that explains why there is none.

    Parsed by :func:`streams.protocol.values.loads`: bounded depth, finite numbers, no lone
    surrogates; a body over ``DATA_UPLOAD_MAX_MEMORY_SIZE`` is a 413, never Django's HTML page.
    """
    if request.content_type != "application/json":
        return error("send a JSON body with Content-Type: application/json", "bad_request", 415)
    try:
        raw = request.body
    except RequestDataTooBig:
        return body_too_large()
    try:
        body = values.loads(raw or b"null")
    except values.BadValue as exc:
        return error(f"the body is not usable JSON: {exc}", "bad_json", 400)
    if not isinstance(body, dict):
        return error("the body must be a JSON object", "bad_request", 400)
    return body


def body_too_large() -> JsonResponse:
    limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    return error(f"the body is larger than {limit} bytes", "body_too_large", 413, limit=limit)


def form_errors(form: Any, prefix: str = "invalid request", **extra: Any) -> JsonResponse:
    """A 400 naming the first problem in the message and every problem under ``fields``."""
    fields = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
    first = next(iter(fields.values()))[0]
    return error(f"{prefix}: {first}", "invalid", 400, fields=fields, **extra)
