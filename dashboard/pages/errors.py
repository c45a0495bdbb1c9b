"""Error answers: JSON for the API (its contract), OpenAI's error JSON on the gateway (what an SDK
parses), Django's pages elsewhere."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.csrf import csrf_failure as default_csrf_failure
from django.views.defaults import bad_request as default_bad_request
from django.views.defaults import page_not_found

from dashboard.api.common import error
from streams.gateway.proxy import openai_error_body


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF refusals: JSON for the API (its contract), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error(f"CSRF check failed: {reason}. Send the X-CSRFToken header.", "csrf_failed", 403)
    return default_csrf_failure(request, reason)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error("no such API route or object", "not_found", 404)
    if request.path.startswith("/gateway/"):
        return _openai_error(f"Unknown request URL: {request.method} {request.path}", "invalid_request_error",
                             "unknown_url", 404)
    return page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """A request Django refuses before any view (a Host not in ALLOWED_HOSTS, say)."""
    if request.path.startswith("/api/"):
        return error("bad request (check the Host header and the request's form)", "bad_request", 400)
    if request.path.startswith("/gateway/"):
        return _openai_error("Bad request: the Host header is not one this server answers for, or the request "
                             "is malformed.", "invalid_request_error", "bad_request", 400)
    return default_bad_request(request, exception)


def _openai_error(message: str, kind: str, code: str, status: int) -> HttpResponse:
    return HttpResponse(openai_error_body(message, kind, code), status=status, content_type="application/json")
