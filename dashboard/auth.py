"""Login with a brake: repeated failures from one address (or on one username) are refused for a
while, so passwords cannot be guessed at speed. Counts live in Django's cache.

The brake sits in the authentication backend (:class:`BrakedModelBackend`), so every form that
checks a password goes through it: ``/accounts/login/``, ``/admin/login/``, anything added later.
Each attempt is counted *before* the password hash is checked, with one atomic increment per key
(``cache.add`` then ``cache.incr``: atomic in the local-memory and Redis caches), so parallel
attempts cannot all read the same old count: at most ``STREAMSCOPE_LOGIN_MAX_FAILURES`` attempts
per address and per username reach the hasher in a lockout window. A success takes its own attempt
back off the counts (it was not a failure); it does not wipe earlier failures.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse

LOCKED_ATTRIBUTE = "streamscope_login_locked"

log = logging.getLogger(__name__)


def _keys(request: HttpRequest | None, username: str) -> list[str]:
    keys = []
    if request is not None:
        keys.append(f"login-fail:ip:{request.META.get('REMOTE_ADDR', 'unknown')}")
    username = username.strip().lower()[:150]
    if username:
        keys.append(f"login-fail:user:{username}")
    return keys


def _count_attempt(key: str) -> int:
    """Add one to ``key``'s count atomically and return the new count."""
    timeout = settings.STREAMSCOPE_LOGIN_LOCKOUT_S
    for _ in range(3):
        cache.add(key, 0, timeout)  # no-op when the key exists; the window starts at the first attempt
        try:
            return cache.incr(key)
        except ValueError:  # expired between add and incr: start again
            continue
    return settings.STREAMSCOPE_LOGIN_MAX_FAILURES + 1  # a cache that will not count: refuse


def _forgive_attempt(key: str) -> None:
    try:
        cache.decr(key)
    except ValueError:  # expired meanwhile: nothing to take back
        pass


def lockout_minutes() -> int:
    return max(1, settings.STREAMSCOPE_LOGIN_LOCKOUT_S // 60)


def is_locked(request: HttpRequest | None) -> bool:
    """Whether the brake refused a login attempt made during ``request``."""
    return bool(getattr(request, LOCKED_ATTRIBUTE, False))


class BrakedModelBackend(ModelBackend):
    """Django's username/password backend behind the login brake (AUTHENTICATION_BACKENDS)."""

    def authenticate(self, request: HttpRequest | None, username: str | None = None,
                     password: str | None = None, **kwargs: Any) -> Any:
        if username is None:
            username = kwargs.get(get_user_model().USERNAME_FIELD)
        if username is None or password is None:
            return None
        keys = _keys(request, str(username))
        limit = settings.STREAMSCOPE_LOGIN_MAX_FAILURES
        counts = [_count_attempt(key) for key in keys]
        if any(count > limit for count in counts):
            if request is not None:
                setattr(request, LOCKED_ATTRIBUTE, True)
            # Stops authenticate() here (no other backend is asked) and fires user_login_failed.
            raise PermissionDenied("too many failed login attempts")
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            for key in keys:
                _forgive_attempt(key)
        return user


class BrakedFormMixin:
    """Says "too many attempts" instead of "wrong password" when the brake refused."""

    request: HttpRequest | None

    def get_invalid_login_error(self) -> ValidationError:
        if is_locked(self.request):
            minutes = lockout_minutes()
            return ValidationError(
                f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                code="locked",
            )
        return super().get_invalid_login_error()


class BrakedAuthenticationForm(BrakedFormMixin, AuthenticationForm):
    pass


class BrakedAdminAuthenticationForm(BrakedFormMixin, AdminAuthenticationForm):
    pass


def _answer_locked(request: HttpRequest, response: HttpResponse) -> HttpResponse:
    if is_locked(request):
        response.status_code = 429
        if getattr(response, "context_data", None) is not None:
            response.context_data.update(locked=True, minutes=lockout_minutes())
    return response


class RateLimitedLoginView(auth_views.LoginView):
    """``/accounts/login/``: the brake's refusal is a 429 with the "try again in N minutes" page."""

    authentication_form = BrakedAuthenticationForm

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        return _answer_locked(request, super().post(request, *args, **kwargs))


@login_not_required
def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """``/admin/login/``: the admin's own login view (its form, template and redirects; the form is
    :class:`BrakedAdminAuthenticationForm`, set in ``DashboardConfig.ready``) with the brake's
    refusal answered 429 as on ``/accounts/login/``."""
    return _answer_locked(request, admin.site.login(request, extra_context))


# --- websockets end with the session ---------------------------------------------------------

def session_group(session_key: str) -> str:
    """The channel-layer group a session's websockets join (dashboard/consumers.py). A hash: the
    key itself is a credential and group names end up in Redis keys."""
    return "session-" + hashlib.sha256(session_key.encode()).hexdigest()[:32]


def end_sockets_of_session(sender: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
    """``user_logged_out`` receiver: the session's open websockets close with 4401."""
    session_key = getattr(getattr(request, "session", None), "session_key", None)
    layer = get_channel_layer()
    if not session_key or layer is None:
        return
    try:
        async_to_sync(layer.group_send)(session_group(session_key), {"type": "session.ended"})
    except Exception:  # a layer outage must not break logout; the consumers' session check catches up
        log.warning("could not tell this session's websockets about the logout", exc_info=True)
