"""Personal API tokens: issue, check, revoke, and the middleware that signs requests in with one.

``Authorization: Bearer <token>`` works on the JSON API (``/api/``) and the gateway (``/gateway/``).
A request carrying a valid token is that token's owner's request, whatever session cookie it also
carries, and is exempt from CSRF checks: a cross-site page cannot set an Authorization header, so
a token cannot be ridden the way a cookie can. Session requests keep the CSRF check.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import secrets
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user_model
from django.http import HttpRequest
from django.utils import timezone

from dashboard.models import ApiToken
from streams.pipeline import loop_db

log = logging.getLogger(__name__)

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
    if _use_due(token.last_used_at, now):
        _write_last_used(token.pk, now)
        token.last_used_at = now
    return token


def _use_due(last_used: datetime | None, now: datetime) -> bool:
    """Whether a token's last use is to be written (once per LAST_USED_RESOLUTION)."""
    return last_used is None or now - last_used >= LAST_USED_RESOLUTION


async def token_owner(secret: str) -> Any | None:
    """The owner of the live token ``secret`` opens, or None; looked up on every request (a revoked
    token stops working at once, whichever process revoked it).

    For the gateway's direct path, where every millisecond before the first byte counts: the token
    is one indexed read on a kept connection of the serving thread's own, with no hop to a database
    thread and back (1-10 ms on a busy machine: two thread wake-ups). SQLite: a plain read (tens of
    microseconds); PostgreSQL: an asyncio connection (psycopg) per event loop. The owner comes back
    by id (all a run needs). A token whose last use is to be written (once a minute) is written on
    the database thread in the background: the read has already found it live, and an app calling
    once a minute or less would otherwise wait for that hop on every request. Other databases, an
    in-memory database and a failed read take the :func:`authenticate_token` path on the database
    thread."""
    if not secret.startswith(TOKEN_PREFIX):
        return None
    try:
        row = await _read_token(hash_token(secret))
    except Exception as exc:  # the fast path is only an optimisation: any failure costs speed, not the request
        if not isinstance(exc, _NoDirectRead):
            loop_db.note_fallback("the gateway's direct token read", exc)
        token = await database_sync_to_async(authenticate_token)(secret)
        return token.owner if token is not None else None
    if row is None:
        return None
    token_id, owner_id, last_used = row
    if isinstance(last_used, str):  # SQLite: as stored, UTC without a zone when USE_TZ is on
        last_used = datetime.fromisoformat(last_used)
        if settings.USE_TZ:
            last_used = last_used.replace(tzinfo=UTC)
    now = timezone.now()
    if _use_due(last_used, now):
        _note_use_later(token_id, now)
    return get_user_model()(pk=owner_id, is_active=True)


_noting: dict[int, asyncio.Task] = {}  # token id -> its last use being written (strong references)


def _note_use_later(token_id: int, now: datetime) -> None:
    """``last_used_at`` written on the database thread beside the request, once per token at a time."""
    loop = asyncio.get_running_loop()
    writing = _noting.get(token_id)
    if writing is not None and not writing.done() and writing.get_loop() is loop:
        return
    # A context of its own: not the request's (on Django's view path its database work would run on
    # that request's own thread and connection, which ends with it).
    task = loop.create_task(_note_use(token_id, now), name=f"token-used-{token_id}", context=contextvars.Context())
    _noting[token_id] = task
    task.add_done_callback(lambda done: _noting.pop(token_id, None) if _noting.get(token_id) is done else None)


async def _note_use(token_id: int, now: datetime) -> None:
    try:
        await database_sync_to_async(_write_last_used)(token_id, now)
    except Exception as exc:  # noqa: BLE001 - a missed last-use time is tried again by the next request
        loop_db.note_fallback("writing an API token's last use", exc)


def _write_last_used(token_id: int, now: datetime) -> None:
    ApiToken.objects.filter(pk=token_id).update(last_used_at=now)


class _NoDirectRead(Exception):
    pass


async def _read_token(token_hash: str) -> tuple[int, int, Any] | None:
    """(token id, owner id, last used) of the live token with this hash, read without a thread hop."""
    database = settings.DATABASES["default"]
    if database["ENGINE"] == "django.db.backends.sqlite3":
        return _read_token_sqlite(token_hash, str(database["NAME"]))
    if loop_db.available():
        return await _read_token_postgres(token_hash)
    raise _NoDirectRead


_readers = threading.local()  # this thread's SQLite connection for token reads, and its database


def _read_token_sqlite(token_hash: str, name: str) -> tuple[int, int, str | None] | None:
    if name == ":memory:" or "mode=memory" in name:
        raise _NoDirectRead
    connection = getattr(_readers, "connection", None)
    try:
        if connection is None or _readers.name != name:
            # Autocommit: each read sees what is committed now (a revocation included).
            connection = sqlite3.connect(Path(name).absolute().as_uri(), uri=True, timeout=0.1,
                                         isolation_level=None, check_same_thread=False)
            _readers.connection, _readers.name = connection, name
        return connection.execute(_token_query("?"), (token_hash,)).fetchone()
    except (sqlite3.Error, ValueError) as exc:
        _readers.connection = None
        raise _NoDirectRead from exc


async def _read_token_postgres(token_hash: str) -> tuple[int, int, Any] | None:
    try:
        async with loop_db.postgres() as connection:
            async with connection.cursor() as cursor:
                await cursor.execute(_token_query("%s"), (token_hash,))
                return await cursor.fetchone()
    except loop_db.NoDirectPath as exc:
        raise _NoDirectRead from exc


@functools.cache
def _token_query(placeholder: str) -> str:
    """authenticate_token's query in SQL (built once the models are loaded)."""
    users = get_user_model()._meta.db_table
    return (f'SELECT t.id, t.owner_id, t.last_used_at FROM "{ApiToken._meta.db_table}" t JOIN "{users}" u '
            f'ON u.id = t.owner_id WHERE t.token_hash = {placeholder} AND t.revoked_at IS NULL AND u.is_active')


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
