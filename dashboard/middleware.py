"""Response headers every page gets, and JSON (never a technical page) for API errors."""

from __future__ import annotations

import logging

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin

log = logging.getLogger(__name__)

INTERNAL_ERROR = {"error": {"message": "internal error; the server log has the details",
                            "code": "internal_error", "type": "server_error"}}
# Machine-facing paths: their callers expect JSON errors, whatever DEBUG says.
JSON_PATHS = ("/api/", "/gateway/", "/replay/", "/sim/")

# No inline scripts or styles anywhere: every page's JS and CSS is a static file.
# data: and blob: images are partial images from image-generation streams.
CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'self'",
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)


def request_headers(scope: dict) -> dict[str, str]:
    """The request's headers by lower-cased name; repeated ones joined with commas, as Django does."""
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin1").lower(), raw_value.decode("latin1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def is_secure(scope: dict, headers: dict[str, str]) -> bool:
    """Django's ``request.is_secure()`` for an ASGI scope served past Django (the gateway's and the
    open simulator's direct paths), SECURE_PROXY_SSL_HEADER included."""
    proxy_header = settings.SECURE_PROXY_SSL_HEADER
    if proxy_header:
        meta_name, secure_value = proxy_header
        if meta_name.startswith("HTTP_"):
            value = headers.get(meta_name[5:].lower().replace("_", "-"))
            if value is not None:
                return value.split(",")[0].strip() == secure_value
    return scope.get("scheme", "http") == "https"


def security_headers(secure: bool) -> dict[str, str]:
    """The headers Django's SecurityMiddleware, XFrameOptionsMiddleware and this module's CSP add to a
    response, for the gateway's direct ASGI path (dashboard/api/gateway.py), which skips middleware.
    tests/gateway/test_asgi.py compares the two paths' headers."""
    headers = {"Content-Security-Policy": CONTENT_SECURITY_POLICY}
    if settings.SECURE_HSTS_SECONDS and secure:
        sts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        sts += "; includeSubDomains" if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS else ""
        sts += "; preload" if settings.SECURE_HSTS_PRELOAD else ""
        headers["Strict-Transport-Security"] = sts
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers["X-Content-Type-Options"] = "nosniff"
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        headers["Referrer-Policy"] = ",".join(
            [v.strip() for v in policy.split(",")] if isinstance(policy, str) else policy)
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers["Cross-Origin-Opener-Policy"] = settings.SECURE_CROSS_ORIGIN_OPENER_POLICY
    headers["X-Frame-Options"] = getattr(settings, "X_FRAME_OPTIONS", "DENY").upper()
    return headers


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds the CSP header; works for sync and async views alike (MiddlewareMixin)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        # The admin ships inline scripts and styles of its own; everything else obeys the policy.
        if not request.path.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response


class JsonErrorsMiddleware(MiddlewareMixin):
    """An exception in an API view becomes a JSON error: with DEBUG on, Django would otherwise answer
    with its technical page (settings and source) and an HTML page is no use to an API client."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not request.path.startswith(JSON_PATHS):
            return None
        if isinstance(exception, RequestDataTooBig):
            return JsonResponse({"error": {"message": "the body is too large", "code": "body_too_large",
                                           "type": "invalid_request_error"}}, status=413)
        log.error("%s %s failed", request.method, request.path, exc_info=exception)
        return JsonResponse(INTERNAL_ERROR, status=500)
