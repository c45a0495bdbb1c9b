"""Personal API tokens: issue, check, revoke, and the middleware that signs requests in with one.

``Authorization: Bearer <token>`` works on the JSON API (``/api/``) and the gateway (``/gateway/``).
A request carrying a valid token is that token's owner's request, whatever session cookie it also
carries, and is exempt from CSRF checks: a cross-site page cannot set an Authorization header, so
a token cannot be ridden the way a cookie can. Session requests keep the CSRF check.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from channels.db import database_sync_to_async
from django.http import HttpRequest
from django.utils import timezone

from dashboard.models import ApiToken

TOKEN_PREFIX = "ssk_"
PREFIX_SHOWN = 12  # "ssk_" and 8 characters of the secret: enough to tell tokens apart
TOKEN_PATHS = ("/api/", "/gateway/")
LAST_USED_RESOLUTION = timedelta(minutes=1)  # last_used_at is written at most once a minute
REJECTED = ("the API token is unknown or revoked; make one at /settings/tokens/ and send it as "
            "Authorization: Bearer <token>")


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def issue_token(owner: Any, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``owner``: the stored row and the secret, which is never seen again."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(owner=owner, name=name.strip()[:100], prefix=secret[:PREFIX_SHOWN],
                                    token_hash=hash_token(secret))
    return token, secret


def revoke_token(token: ApiToken) -> None:
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])


def authenticate_token(secret: str) -> ApiToken | None:
    """The live token this secret opens (owner loaded), or None: unknown, revoked, owner inactive."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    token = (ApiToken.objects.select_related("owner")
             .filter(token_hash=hash_token(secret), revoked_at__isnull=True, owner__is_active=True).first())
    if token is None:
        return None
    now = timezone.now()
    if token.last_used_at is None or now - token.last_used_at >= LAST_USED_RESOLUTION:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
        token.last_used_at = now
    return token


def authorization_bearer(request: HttpRequest) -> str | None:
    """The ``Authorization: Bearer`` secret of any request: None without the header, "" when malformed."""
    return bearer_of(request.headers.get("Authorization"))


def bearer_of(header: str | None) -> str | None:
    """The secret of an ``Authorization`` header's value: None without one, "" when it is not Bearer."""
    if header is None:
        return None
    scheme, _, secret = header.partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def bearer_secret(request: HttpRequest) -> str | None:
    """The bearer token of a request to a token-accepting path; "" for a malformed header."""
    return authorization_bearer(request) if request.path.startswith(TOKEN_PATHS) else None


class BearerTokenMiddleware:
    """Signs in requests that carry a valid API token; marks the others as rejected.

    Runs before any view (and so before CsrfViewMiddleware.process_view, which checks
    ``_dont_enforce_csrf_checks``). The refusal itself is the view's: ``api_view`` answers JSON,
    the gateway answers in OpenAI's error shape (``request.bearer_rejected``).
    """

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self.is_async:
            return self._acall(request)
        secret = bearer_secret(request)
        if secret is not None:
            _apply(request, authenticate_token(secret) if secret else None)
        return self.get_response(request)

    async def _acall(self, request: HttpRequest) -> Any:
        secret = bearer_secret(request)
        if secret is not None:
            _apply(request, await database_sync_to_async(authenticate_token)(secret) if secret else None)
        return await self.get_response(request)


def _apply(request: HttpRequest, token: ApiToken | None) -> None:
    if token is None:
        request.bearer_rejected = REJECTED
        return
    owner = token.owner

    async def auser() -> Any:
        return owner

    request.user = owner
    request.auser = auser
    request.api_token = token
    request._dont_enforce_csrf_checks = True
