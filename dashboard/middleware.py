"""Response headers every page gets, JSON (never a technical page) for API errors, and Django's own
middleware with its hooks run on the event loop under ASGI instead of a thread hop each.

Under ASGI, :class:`~django.utils.deprecation.MiddlewareMixin` runs every ``process_request``,
``process_view`` and ``process_response`` through ``sync_to_async``: about fifteen thread hops per
request with our list, most of an API request's CPU (docs/performance.md). The classes at the end
of this module are Django's (and WhiteNoise's) with the same hooks, called directly on the event
loop where they do no I/O; where one may touch the database (a session to save, messages to store,
the user to load) it still runs on the request's thread, as before. Django's async guard makes a
hook that reaches the database on the event loop fail loudly (``SynchronousOnlyOperation``), never
silently. Under WSGI (tests' ``Client``) nothing changes.

Django's SecurityMiddleware, CsrfViewMiddleware and XFrameOptionsMiddleware are used as they are
(a hop per hook still): ``manage.py check --deploy`` looks for their dotted paths in MIDDLEWARE and
skips the checks of their settings (HSTS, SSL redirect, secure CSRF cookie) without them
(docs/decisions.md).
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings
from django.contrib.auth import middleware as auth_middleware
from django.contrib.messages.middleware import MessageMiddleware as DjangoMessageMiddleware
from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.middleware.common import CommonMiddleware as DjangoCommonMiddleware
from django.utils.deprecation import MiddlewareMixin
from whitenoise.middleware import WhiteNoiseMiddleware as BaseWhiteNoiseMiddleware

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


class InlineHooks:
    """For a :class:`MiddlewareMixin` whose ``process_request`` and ``process_response`` do no I/O:
    in async mode they run on the event loop instead of through ``sync_to_async`` each. A subclass
    with a hook that sometimes does I/O overrides :meth:`needs_thread_for_response`."""

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        response = None
        if hasattr(self, "process_request"):
            response = self.process_request(request)
        response = response or await self.get_response(request)
        if hasattr(self, "process_response"):
            if self.needs_thread_for_response(request):
                return await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
            response = self.process_response(request, response)
        return response

    def needs_thread_for_response(self, request: HttpRequest) -> bool:
        return False


class ContentSecurityPolicyMiddleware(InlineHooks, MiddlewareMixin):
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


# --- Django's middleware, hooks on the event loop under ASGI ------------------------------------------


class WhiteNoiseMiddleware(BaseWhiteNoiseMiddleware):
    """WhiteNoise's, async-capable: a path that is not a static file goes on without a thread hop.
    WhiteNoise itself is sync only, which put the whole middleware stack below it behind a hop each
    way (``sync_to_async`` to it, ``async_to_sync`` back). A static file is served as before, its file
    opened on the request's thread."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any = None, settings: Any = settings) -> None:
        super().__init__(get_response, settings)
        self.async_mode = iscoroutinefunction(get_response)
        if self.async_mode:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.async_mode:
            return self.__acall__(request)
        return super().__call__(request)

    async def __acall__(self, request: HttpRequest) -> HttpResponse:
        if self.autorefresh:  # development: looks in the file system on every request
            static_file = await sync_to_async(self.find_file, thread_sensitive=True)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            return await sync_to_async(self.serve, thread_sensitive=True)(static_file, request)
        return await self.get_response(request)


class SessionMiddleware(InlineHooks, DjangoSessionMiddleware):
    """Django's: the session is made lazily (no I/O); the response's hook runs on the request's
    thread only when it may save the session."""

    def needs_thread_for_response(self, request: HttpRequest) -> bool:
        session = getattr(request, "session", None)
        return session is not None and (session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


class CommonMiddleware(InlineHooks, DjangoCommonMiddleware):
    """Django's: host check, slash redirect, Content-Length (no I/O)."""


async def _auser(request: HttpRequest) -> Any:
    """The request's user, loaded (session, then user) in one hop to the request's thread and shared
    with ``request.user``; Django's own ``auser`` makes a hop per query and loads the user again."""
    if not hasattr(request, "_acached_user"):
        request._acached_user = await sync_to_async(auth_middleware.get_user, thread_sensitive=True)(request)
    return request._acached_user


class AuthenticationMiddleware(InlineHooks, auth_middleware.AuthenticationMiddleware):
    """Django's: ``request.user`` stays lazy; ``request.auser`` loads it in one hop (:func:`_auser`)."""

    def process_request(self, request: HttpRequest) -> None:
        super().process_request(request)
        if self.async_mode:
            request.auser = lambda: _auser(request)


class LoginRequiredMiddleware(auth_middleware.LoginRequiredMiddleware):
    """Django's: the same answers. A view marked ``login_not_required`` goes on without its user
    loaded here (Django loads it first, then looks at the mark): the API's views load it themselves,
    in the same hop as their own reads (dashboard/api/common.py). Any other view's user is loaded
    through ``request.auser`` (one hop, kept for the view)."""

    def __init__(self, get_response: Any) -> None:
        super().__init__(get_response)
        if self.async_mode:
            self.process_view = self._aprocess_view

    async def _aprocess_view(self, request: HttpRequest, view_func: Any, view_args: Any,
                             view_kwargs: Any) -> HttpResponse | None:
        if not getattr(view_func, "login_required", True):
            return None
        user = await request.auser()
        if user.is_authenticated:
            return None
        return self.handle_no_permission(request, view_func)


class MessageMiddleware(InlineHooks, DjangoMessageMiddleware):
    """Django's: the storage is made lazily (no I/O); the response's hook runs on the request's
    thread only when messages were added or read (storing them may write the session)."""

    def needs_thread_for_response(self, request: HttpRequest) -> bool:
        storage = getattr(request, "_messages", None)
        return storage is not None and (storage.used or storage.added_new)
