"""Response headers every page gets."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

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


class ContentSecurityPolicyMiddleware(MiddlewareMixin):
    """Adds the CSP header; works for sync and async views alike (MiddlewareMixin)."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        # The admin ships inline scripts and styles of its own; everything else obeys the policy.
        if not request.path.startswith("/admin/"):
            response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        return response
