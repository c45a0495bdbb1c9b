"""SQLite's page size, and a WAL checkpoint interval in bytes rather than in pages.

A new database is made with 16 KiB pages (dashboard/settings.py's ``init_command`` asks for them
before anything is written; an existing database keeps the size it was made with). Storing a fast
stream, the database thread's time went mostly to the kernel: every page reaches the file twice
(the WAL frame, then the checkpoint's copy), a WAL frame is two ``pwrite`` calls, and each call,
more than each byte, cost it (~3 us to extend a file by one 4 KiB page on this VM; 32 MB took
20-24 ms of system time in 4 KiB writes, 7 ms in 16 KiB ones). With 16 KiB pages the thread's CPU
per stored event fell 1.22-1.28 -> 0.90-0.99 us (docs/performance.md, tenth session); 32 and 64 KiB
did no better there, and each read of one row's page reads more.

SQLite counts its automatic checkpoint interval (``wal_autocheckpoint``) in pages: its default of
1,000 pages is ~4 MB of log with 4 KiB pages but 16 MB with 16 KiB ones, and longer checkpoints on
the database thread lengthened the many-runs benchmark's p99 before (docs/decisions.md). So each
connection sets it to :data:`WAL_CHECKPOINT_BYTES` over its own database's page size: 250 pages on
a new database, 1,000 (as before) on one with 4 KiB pages.
"""

from __future__ import annotations

from typing import Any

WAL_CHECKPOINT_BYTES = 1000 * 4096  # SQLite's default interval with its default page size


def checkpoint_pages(page_size: int) -> int:
    """The ``wal_autocheckpoint`` (in pages) of a database with ``page_size`` pages."""
    return max(1, WAL_CHECKPOINT_BYTES // page_size)


def set_checkpoint_interval(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: an SQLite connection checkpoints every :data:`WAL_CHECKPOINT_BYTES`."""
    if connection.vendor != "sqlite":
        return
    raw = connection.connection
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    raw.execute(f"PRAGMA wal_autocheckpoint={checkpoint_pages(page_size)}")
