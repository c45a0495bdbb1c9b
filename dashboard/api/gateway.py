"""The recording gateway's HTTP face: ``/gateway/<provider>/v1/...`` (streams/gateway/, docs/gateway.md).

SDKs call it with ``Authorization: Bearer <Streamscope API token>``; everything it answers is
OpenAI-shaped, its own refusals included. Only a token signs a caller in here (no session, so no
CSRF to check).
"""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from dashboard.api.common import openai_error
from streams.gateway.proxy import (
    GatewayRequest,
    UnknownRoute,
    forward,
    route_kind,
)
from streams.upstream.providers import UnknownProvider, get_provider

CALLER_KEY_HEADER = "X-Upstream-Authorization"


@login_not_required
@csrf_exempt
async def proxy(request: HttpRequest, provider: str, path: str) -> HttpResponse:
    token = getattr(request, "api_token", None)  # dashboard.tokens.BearerTokenMiddleware
    if token is None:
        reason = getattr(request, "bearer_rejected", None) or (
            "Send a Streamscope API token as the API key (Authorization: Bearer <token>); "
            "make one at /settings/tokens/.")
        return openai_error(reason, 401, "invalid_api_key")
    try:
        upstream = get_provider(provider)
    except UnknownProvider:
        return openai_error(f"No provider named {provider!r} on this Streamscope.", 404, "unknown_provider")
    try:
        route_kind(request.method, path)
    except UnknownRoute as exc:
        return openai_error(str(exc), 404, "unknown_url")
    caller_key = None
    if upstream.gateway_key == "caller":
        caller_key = request.headers.get(CALLER_KEY_HEADER, "").strip() or None
        if caller_key is None:
            return openai_error(f"The provider {provider!r} takes your own key: send it as "
                                f"{CALLER_KEY_HEADER}: Bearer <your {provider} key>.", 401, "missing_upstream_key")
    try:
        body = request.body
    except RequestDataTooBig:
        return openai_error("The request body is too large for this server.", 413, "body_too_large")
    answer = await forward(GatewayRequest(
        provider=upstream, method=request.method, path=path, query=request.META.get("QUERY_STRING", ""),
        body=body, owner=request.user, caller_key=caller_key,
        headers={name.lower(): value for name, value in request.headers.items()
                 if name.lower() not in ("authorization", CALLER_KEY_HEADER.lower(), "cookie")},
    ))
    if answer.stream is not None:
        response: HttpResponse = StreamingHttpResponse(answer.stream, status=answer.status)
        response["Cache-Control"] = "no-cache"
        response["X-Accel-Buffering"] = "no"
    else:
        response = HttpResponse(answer.body, status=answer.status)
    for name, value in answer.headers.items():
        response[name] = value
    return response
