"""A request served through Django's ASGI handler leaves no SQLite connection open behind it."""

import asyncio
import threading

import pytest
from asgiref.sync import sync_to_async
from django.core.asgi import get_asgi_application
from django.db.backends.signals import connection_created
from django.db.backends.sqlite3.base import DatabaseWrapper

from dashboard.tokens import issue_token

pytestmark = pytest.mark.django_db(transaction=True)


async def asgi_get(path: str, headers: list[tuple[bytes, bytes]]) -> int:
    app = get_asgi_application()
    sent = []
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.Event().wait()  # the client stays until the response is sent

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
             "root_path": "", "headers": [(b"host", b"127.0.0.1"), *headers],
             "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000)}
    await app(scope, receive, send)
    return sent[0]["status"]


async def test_a_requests_own_thread_closes_its_database_connection_when_it_ends(user, monkeypatch):
    _, secret = await sync_to_async(issue_token)(user, "t")
    opened, closed = [], []

    def track(sender, connection, **kwargs):
        if threading.current_thread() is not threading.main_thread():
            opened.append(connection)

    # The test database lives in memory, where Django ignores close(): the request's asking is what
    # is observed (on a file database, the close that follows frees SQLite's caches).
    real_close = DatabaseWrapper.close
    monkeypatch.setattr(DatabaseWrapper, "close", lambda self: (closed.append(self), real_close(self))[1])
    connection_created.connect(track)
    try:
        status = await asgi_get("/api/runs/", [(b"authorization", f"Bearer {secret}".encode())])
    finally:
        connection_created.disconnect(track)
    assert status == 200
    assert opened  # the request read its token and runs on a thread of its own ...
    assert all(connection in closed for connection in opened)  # ... and closed what it opened
