"""SQLite's WAL checkpoints on a thread of their own, not on the thread that stores the events.

By default the connection whose commit takes the write-ahead log past 1,000 pages copies the log
into the database and syncs both files (``wal_autocheckpoint``): on the database thread, inside a
flush, a run's reader waiting behind it. On the ingest benchmark those checkpoints were ~0.3 us of
the thread's CPU and ~0.8 us of its wall time per stored event (docs/performance.md, ninth session).
Here the writer only counts the rows it stores; every :data:`CHECKPOINT_ROWS` (about SQLite's
1,000 pages) and at least every :data:`CHECKPOINT_EVERY_S` after a write, a thread with its own
connection runs a PASSIVE checkpoint, which waits for no reader or writer. The writer's own
autocheckpoint stays, at :data:`WRITER_AUTOCHECKPOINT_PAGES`, should that thread fall behind.
Committed data is as durable as before: ``synchronous=NORMAL`` syncs the log at each checkpoint.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from typing import Any

log = logging.getLogger(__name__)

CHECKPOINT_ROWS = 12_000  # ~3.5 MB of a fast stream's events, ~900 pages
CHECKPOINT_EVERY_S = 1.0
WRITER_AUTOCHECKPOINT_PAGES = 10_000  # SQLite's default is 1,000


class Checkpointer:
    """Checkpoints one database file's WAL on a daemon thread, when :meth:`written` says so."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.checkpoints = 0  # run so far (tests)
        self._rows = 0
        self._dirty = False
        self._stopped = False
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="streamscope-wal-checkpoints", daemon=True)
        self._thread.start()

    def written(self, rows: int) -> None:
        """``rows`` were stored (or are about to be committed): checkpoint when enough have been."""
        self._dirty = True
        self._rows += rows
        if self._rows >= CHECKPOINT_ROWS:
            self._rows = 0
            self._wake.set()

    def stop(self) -> None:
        """End the thread (after a checkpoint of what was written, if any)."""
        self._stopped = True
        self._wake.set()
        self._thread.join()

    def _run(self) -> None:
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        while not self._stopped:
            self._wake.wait(CHECKPOINT_EVERY_S)
            self._wake.clear()
            if not self._dirty:
                continue
            self._dirty = False
            try:
                # fetchall: the statement done, this connection holds no read snapshot that would
                # keep the writer from starting the log over.
                db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:  # another process's checkpoint holds the lock: the next one
                log.debug("WAL checkpoint of %s skipped: %r", self.path, exc)
            self.checkpoints += 1
        db.close()


_checkpointers: dict[str, Checkpointer] = {}
_lock = threading.Lock()


def checkpointer(path: str) -> Checkpointer:
    """The process's checkpointer of the database file at ``path`` (started on first use)."""
    found = _checkpointers.get(path)
    if found is None:
        with _lock:
            found = _checkpointers.get(path)
            if found is None:
                found = _checkpointers[path] = Checkpointer(path)
    return found


def hand_over(connection: Any) -> Checkpointer | None:
    """For Django's SQLite ``connection`` about to store events: its WAL checkpointed by the file's
    checkpointer (the connection's own autocheckpoint only a fallback); None for a database in
    memory, which has no WAL."""
    if connection.is_in_memory_db():
        return None
    raw = connection.connection
    if getattr(connection, "_wal_handed_over", None) is not raw:  # once per connection opened
        raw.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT_PAGES}")
        connection._wal_handed_over = raw
    return checkpointer(connection.settings_dict["NAME"])
