"""The gateway's direct token read is only a shortcut: whatever goes wrong with it (a relative
database path, an option it cannot take, a failing or hanging connection), the request is answered
by the ordinary lookup on the database thread, never with an error."""

from __future__ import annotations

import sqlite3

import pytest
from asgiref.sync import sync_to_async

from dashboard import tokens
from dashboard.tokens import hash_token, issue_token

pytestmark = pytest.mark.django_db(transaction=True)


async def test_any_failure_of_the_direct_read_falls_back_to_the_database_thread(user, monkeypatch):
    _token, secret = await sync_to_async(issue_token)(user)

    async def broken(_hash):
        raise TypeError("got multiple values for keyword argument 'connect_timeout'")

    monkeypatch.setattr(tokens, "_read_token", broken)
    owner = await tokens.token_owner(secret)
    assert owner is not None and owner.pk == user.pk
    assert await tokens.token_owner("ssk_unknown") is None


def test_a_relative_sqlite_path_is_read_from_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    db = sqlite3.connect("db.sqlite3")
    db.executescript(
        'CREATE TABLE "auth_user" (id INTEGER PRIMARY KEY, is_active BOOL);'
        'CREATE TABLE "dashboard_apitoken" (id INTEGER PRIMARY KEY, owner_id INTEGER, token_hash TEXT, '
        'revoked_at TEXT, last_used_at TEXT);'
        'INSERT INTO "auth_user" VALUES (7, 1);'
        f"INSERT INTO \"dashboard_apitoken\" VALUES (3, 7, '{hash_token('ssk_x')}', NULL, NULL);")
    db.commit()
    db.close()
    monkeypatch.setattr(tokens._readers, "connection", None, raising=False)
    assert tokens._read_token_sqlite(hash_token("ssk_x"), "db.sqlite3") == (3, 7, None)
    assert tokens._read_token_sqlite(hash_token("ssk_y"), "db.sqlite3") is None


async def test_a_last_use_due_is_written_beside_the_request_not_before_it(user, monkeypatch):
    """Once a minute a token's last use is written: on the database thread, in the background, not
    in the request's way (an app calling once a minute or less waited for that hop every time)."""
    import asyncio
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.models import ApiToken

    token, secret = await sync_to_async(issue_token)(user)
    old = timezone.now() - timedelta(minutes=5)
    await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=old)

    async def direct_read(token_hash):  # what the kept connection's read answers
        return token.pk, user.pk, old

    monkeypatch.setattr(tokens, "_read_token", direct_read)
    monkeypatch.setattr(tokens, "authenticate_token", lambda secret: pytest.fail("waited for the database thread"))
    owner = await tokens.token_owner(secret)
    assert owner is not None and owner.pk == user.pk
    assert (await ApiToken.objects.aget(pk=token.pk)).last_used_at == old  # not before the answer
    await asyncio.gather(*tokens._noting.values())
    assert (await ApiToken.objects.aget(pk=token.pk)).last_used_at > old


async def test_a_last_use_write_left_on_another_loop_does_not_stop_this_loops(user, monkeypatch):
    """A write still pending on a loop that is gone (tests make one loop each; a process could too)
    must not keep every later request's last use unwritten."""
    import asyncio
    from datetime import timedelta

    from django.utils import timezone

    from dashboard.models import ApiToken

    token, secret = await sync_to_async(issue_token)(user)
    old = timezone.now() - timedelta(minutes=5)
    await ApiToken.objects.filter(pk=token.pk).aupdate(last_used_at=old)
    gone = asyncio.new_event_loop()
    stale = gone.create_future()  # never done: its loop is closed
    gone.close()
    monkeypatch.setitem(tokens._noting, token.pk, stale)

    async def direct_read(token_hash):
        return token.pk, user.pk, old

    monkeypatch.setattr(tokens, "_read_token", direct_read)
    assert (await tokens.token_owner(secret)).pk == user.pk
    assert tokens._noting[token.pk] is not stale
    await tokens._noting[token.pk]
    assert (await ApiToken.objects.aget(pk=token.pk)).last_used_at > old
