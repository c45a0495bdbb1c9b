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
from django.contrib.admin.forms import AdminAuthenticationForm, AdminPasswordChangeForm
from django.contrib.auth import get_user_model
from django.contrib.auth import views as auth_views
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.decorators import login_not_required
from django.contrib.auth.forms import AuthenticationForm, PasswordChangeForm
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

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
        # PermissionDenied stops authenticate() here (no other backend is asked), firing user_login_failed.
        keys = count_attempt(request, str(username))
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is not None:
            forgive_attempt(keys)
        return user


def count_attempt(request: HttpRequest | None, username: str) -> list[str]:
    """Count one password attempt for the request's address and ``username`` before any hash is
    checked; past the limit, mark the request locked and raise PermissionDenied. Returns the keys
    counted, for :func:`forgive_attempt` once the password proved right."""
    keys = _keys(request, username)
    limit = settings.STREAMSCOPE_LOGIN_MAX_FAILURES
    counts = [_count_attempt(key) for key in keys]
    if any(count > limit for count in counts):
        if request is not None:
            setattr(request, LOCKED_ATTRIBUTE, True)
        raise PermissionDenied("too many failed login attempts")
    return keys


def forgive_attempt(keys: list[str]) -> None:
    """A right password was not a failure: take its attempt back off the counts."""
    for key in keys:
        _forgive_attempt(key)


class BrakedFormMixin:
    """Says "too many attempts" instead of "wrong password" when the brake refused."""

    request: HttpRequest | None

    def get_invalid_login_error(self) -> ValidationError:
        if is_locked(self.request):
            return locked_error()
        return super().get_invalid_login_error()


def locked_error() -> ValidationError:
    minutes = lockout_minutes()
    return ValidationError(f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes != 1 else ''}.",
                           code="locked")


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


class BrakedPasswordChangeForm(PasswordChangeForm):
    """The old password is checked behind the same brake as a login (same counts: the address and
    the username), so a borrowed session cannot guess it at speed to take the account over."""

    def __init__(self, user: Any, *args: Any, request: HttpRequest | None = None, **kwargs: Any) -> None:
        super().__init__(user, *args, **kwargs)
        self.request = request

    def clean_old_password(self) -> str:
        try:
            keys = count_attempt(self.request, self.user.get_username())
        except PermissionDenied:
            raise locked_error() from None
        old_password = super().clean_old_password()
        forgive_attempt(keys)
        return old_password


class BrakedAdminPasswordChangeForm(BrakedPasswordChangeForm, AdminPasswordChangeForm):
    pass


class BrakedPasswordChangeView(auth_views.PasswordChangeView):
    """``/accounts/password_change/``: Django's view with the braked form; a refusal is a 429."""

    form_class = BrakedPasswordChangeForm

    def get_form_kwargs(self) -> dict[str, Any]:
        return {**super().get_form_kwargs(), "request": self.request}

    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        return _answer_locked(request, super().post(request, *args, **kwargs))


def admin_password_change(request: HttpRequest) -> HttpResponse:
    """``/admin/password_change/``: the admin's page (its template, context and done page) with the
    braked form instead of the admin's own, which checks the old password unbraked."""
    request.current_app = admin.site.name
    view = BrakedPasswordChangeView.as_view(
        form_class=BrakedAdminPasswordChangeForm,
        success_url=reverse("admin:password_change_done"),
        template_name=admin.site.password_change_template or "registration/password_change_form.html",
        extra_context=admin.site.each_context(request),
    )
    return view(request)


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
