"""Login with a brake: repeated failures from one address (or on one username) are refused for a
while, so passwords cannot be guessed at speed. Counts live in Django's cache."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import views as auth_views
from django.core.cache import cache
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render


def _keys(request: HttpRequest) -> list[str]:
    address = request.META.get("REMOTE_ADDR", "unknown")
    username = (request.POST.get("username") or "").strip().lower()[:150]
    keys = [f"login-fail:ip:{address}"]
    if username:
        keys.append(f"login-fail:user:{username}")
    return keys


class RateLimitedLoginView(auth_views.LoginView):
    def post(self, request: HttpRequest, *args, **kwargs) -> HttpResponse:
        limit = settings.STREAMSCOPE_LOGIN_MAX_FAILURES
        keys = _keys(request)
        if any((cache.get(key) or 0) >= limit for key in keys):
            minutes = max(1, settings.STREAMSCOPE_LOGIN_LOCKOUT_S // 60)
            return render(
                request,
                "registration/login.html",
                {"form": self.get_form(), "locked": True, "minutes": minutes},
                status=429,
            )
        response = super().post(request, *args, **kwargs)
        if response.status_code == 200:  # the form came back: a failed attempt
            for key in keys:
                cache.add(key, 0, settings.STREAMSCOPE_LOGIN_LOCKOUT_S)
                try:
                    cache.incr(key)
                except ValueError:
                    cache.set(key, 1, settings.STREAMSCOPE_LOGIN_LOCKOUT_S)
        return response
