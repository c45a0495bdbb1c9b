"""Closing a finished request's SQLite connection with its thread.

Under ASGI, Django runs each request's synchronous work on a thread of its own (a
``ThreadSensitiveContext`` per request), and Django opens a connection per thread. SQLite keeps
connections for ``CONN_MAX_AGE`` (the runs' long-lived database thread must not reopen one around
every batch: dashboard/settings.py), so a finished request's connection stayed open until its
thread's locals were garbage collected: cyclic garbage that a full collection frees only rarely
(``gc.freeze()``), each holding SQLite's page and statement caches, ~350 KiB per request measured
with 100 runs started through the API (docs/performance.md). This closes it as the request ends.
"""

from __future__ import annotations

import threading
from typing import Any

from django.db import connections


def close_request_thread_connections(**kwargs: Any) -> None:
    """``request_finished``: close this thread's SQLite connections unless the thread outlives the
    request (the main thread: a test client or a WSGI server's own) or a transaction is open."""
    if threading.current_thread() is threading.main_thread():
        return
    for connection in connections.all(initialized_only=True):
        if connection.vendor == "sqlite" and not connection.in_atomic_block:
            connection.close()
