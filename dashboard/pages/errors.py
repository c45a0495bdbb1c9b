"""Error answers: JSON for the API (its contract), Django's pages elsewhere."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.views.csrf import csrf_failure as default_csrf_failure
from django.views.defaults import page_not_found

from dashboard.api.common import error


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF refusals: JSON for the API (its contract), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        return error(f"CSRF check failed: {reason}. Send the X-CSRFToken header.", "csrf_failed", 403)
    return default_csrf_failure(request, reason)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error("no such API route or object", "not_found", 404)
    return page_not_found(request, exception)
