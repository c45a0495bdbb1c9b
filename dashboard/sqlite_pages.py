"""SQLite's page size, and converting an existing database to the page size new ones get.

A new database is made with 16 KiB pages (dashboard/settings.py's ``init_command`` asks for them
before anything is written; an existing database keeps the size it was made with). Storing a fast
stream, the database thread's time went mostly to the kernel: every page reaches the file twice
(the WAL frame, then the checkpoint's copy), a WAL frame is two ``pwrite`` calls, and each call,
more than each byte, cost it (~3 us to extend a file by one 4 KiB page on this VM; 32 MB took
20-24 ms of system time in 4 KiB writes, 7 ms in 16 KiB ones). With 16 KiB pages the thread's CPU
per stored event fell 1.22-1.28 -> 0.90-0.99 us (docs/performance.md, tenth session); 32 and 64 KiB
did no better there, and each read of one row's page reads more.

When the write-ahead log is copied into the database (the checkpoint) is decided in
streams/pipeline/checkpoints.py: every ~4 MB of log whatever the page size, at a lull in the
database thread's writes.

``manage.py sqlite_pages --convert`` (:func:`convert`) gives an existing database the new page size.
SQLite cannot change the page size of a database in WAL mode, not even by VACUUM, so it leaves WAL,
sets the size, runs VACUUM (which rewrites the whole file) and returns to WAL, holding the database
alone throughout. A VACUUM that fails (a full disk, say) is rolled back by SQLite's own journal,
and a process killed mid-way leaves a journal that the next opener rolls back: either way the
database keeps its old pages and every row. ``VACUUM INTO`` would need half the free space (SQLite
3.40 gave its new file the page size set on the source connection), but putting that file in the
database's place is a rename beside the old file's log, outside SQLite's all-or-nothing commit.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAGE_SIZE = 16384  # a new database's page size (dashboard/settings.py's init_command asks for it)


class ConversionRefused(Exception):
    """The database cannot be converted now; the message says why and what to do."""


class ConversionFailed(Exception):
    """A conversion went wrong; the message says what state the database is in."""


@dataclass(frozen=True)
class DatabaseFile:
    """What the report shows of an SQLite database: its pages, journal mode and size on disk."""

    path: Path
    page_size: int
    journal_mode: str
    bytes_on_disk: int  # the file and its write-ahead log


@dataclass(frozen=True)
class Conversion:
    before: DatabaseFile
    after: DatabaseFile
    tables: int
    rows: int


def database_path(settings_dict: Mapping[str, Any]) -> Path:
    """The file of a database in ``settings.DATABASES``; refused unless it is an SQLite file."""
    engine = settings_dict["ENGINE"]
    if engine != "django.db.backends.sqlite3":
        raise ConversionRefused(
            f"the database is not SQLite ({engine}): only SQLite's page size is set by Streamscope "
            "(PostgreSQL's block size is fixed when the server is built), so there is nothing to convert")
    name = str(settings_dict["NAME"])
    if name == ":memory:" or "mode=memory" in name:
        raise ConversionRefused(f"the database is in memory ({name}): there is no file to convert")
    return Path(name)


def describe_file(path: Path) -> DatabaseFile:
    """The database's page size, journal mode and size; read-only, so it changes nothing."""
    if not path.is_file():
        raise ConversionRefused(f"no SQLite database at {path}")
    if _unfinished_write(path):
        # A write (or a conversion) was cut off in rollback-journal mode; a read-only connection
        # cannot roll it back, so it could not read the file at all.
        raise ConversionRefused(
            f"{path} has an unfinished write ({_hot_journal(path).name}), left by a process that stopped "
            "in the middle of one (a conversion killed mid-VACUUM, say): the next connection that may write "
            "rolls it back, every row as before it; --convert does so first")
    # mode=ro: never creates the file, and a read-only connection does not checkpoint on closing.
    raw = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=1)
    try:
        return _describe(raw, path)
    except sqlite3.Error as exc:
        raise ConversionRefused(f"cannot read {path} as an SQLite database: {exc}") from exc
    finally:
        raw.close()


def convert(path: Path, page_size: int = PAGE_SIZE) -> Conversion:
    """Rewrite the database at ``path`` with ``page_size`` pages and leave it in WAL mode, every row kept.

    Refused (:class:`ConversionRefused`, nothing changed) when it already has them, when the disks
    lack room for VACUUM, or when another connection has it open."""
    roll_back_unfinished_write(path)
    before = describe_file(path)
    if before.page_size == page_size:
        raise ConversionRefused(f"{path} already has {page_size:,}-byte pages: nothing to convert")
    _check_room(path, before.bytes_on_disk)
    raw = sqlite3.connect(path, isolation_level=None, timeout=0.5)
    try:
        _hold_alone(raw, path)
        counts = _row_counts(raw)
        _vacuum_outside_wal(raw, page_size)
        _verify(raw, path, page_size, counts)
        return Conversion(before, _describe(raw, path), len(counts), sum(counts.values()))
    finally:
        raw.close()


def _hot_journal(path: Path) -> Path:
    return path.with_name(path.name + "-journal")


def _unfinished_write(path: Path) -> bool:
    """A rollback journal beside the database that SQLite would roll back: one whose header is not
    zeroed (journal_mode=PERSIST leaves a journal after every commit, its header zeroed; TRUNCATE an
    empty one)."""
    try:
        with _hot_journal(path).open("rb") as journal:
            return journal.read(1) not in (b"", b"\0")
    except FileNotFoundError:
        return False


def roll_back_unfinished_write(path: Path) -> None:
    """SQLite rolls a hot journal back on the first read of a connection that may write."""
    if path.is_file() and _unfinished_write(path):
        raw = sqlite3.connect(path.resolve().as_uri() + "?mode=rw", uri=True, timeout=0.5)
        try:
            raw.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
                raise ConversionRefused(f"cannot roll back the unfinished write in {path}: {exc}") from exc
            raise _in_use(path) from None
        finally:
            raw.close()


def _in_use(path: Path) -> ConversionRefused:
    return ConversionRefused(f"{path} is in use by another connection: stop the server and the stream workers "
                             "(and anything else that opens it), then try again")


def _describe(raw: sqlite3.Connection, path: Path) -> DatabaseFile:
    (page_size,) = raw.execute("PRAGMA page_size").fetchone()
    (journal_mode,) = raw.execute("PRAGMA journal_mode").fetchone()
    log = Path(f"{path}-wal")
    size = path.stat().st_size + (log.stat().st_size if log.exists() else 0)
    return DatabaseFile(path, page_size, journal_mode, size)


def _sqlite_temp_directory() -> Path:
    """Where SQLite's unix VFS puts VACUUM's copy of the database: the first writable of these."""
    candidates = [os.environ.get("SQLITE_TMPDIR"), os.environ.get("TMPDIR"), "/var/tmp", "/usr/tmp", "/tmp"]
    for candidate in filter(None, candidates):
        if os.path.isdir(candidate) and os.access(candidate, os.W_OK | os.X_OK):
            return Path(candidate)
    return Path(".")


def _check_room(path: Path, size: int) -> None:
    """VACUUM writes a copy of the database in SQLite's temporary directory and a rollback journal
    of up to its size beside it: about twice its size when both are on one disk. Running out
    midway is safe (SQLite rolls the VACUUM back) but wastes the wait, so refuse up front."""
    needs: dict[int, tuple[Path, int]] = {}
    for directory in (path.resolve().parent, _sqlite_temp_directory()):
        device = directory.stat().st_dev
        first, bytes_needed = needs.get(device, (directory, 0))
        needs[device] = (first, bytes_needed + size)
    for directory, bytes_needed in needs.values():
        free = shutil.disk_usage(directory).free
        if free < bytes_needed:
            raise ConversionRefused(
                f"converting needs about {mebibytes(bytes_needed)} free on the disk of {directory} "
                f"(VACUUM's copy of the database and its journal), and {mebibytes(free)} is: free some space first")


def _hold_alone(raw: sqlite3.Connection, path: Path) -> None:
    """Take the database for this connection alone until it closes. In WAL mode, EXCLUSIVE locking
    is refused while any other connection has the file open, even an idle one, and once held,
    every other connection waits (and its statements fail after its timeout)."""
    raw.execute("PRAGMA locking_mode=EXCLUSIVE")
    try:
        raw.execute("BEGIN EXCLUSIVE")
        raw.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
        raise _in_use(path) from None


def _row_counts(raw: sqlite3.Connection) -> dict[str, int]:
    """Every table's row count. Virtual tables (full-text search) are left out: their rows live
    in their shadow tables, which are counted."""
    names = [name for (name,) in raw.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name")]
    return {name: raw.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0] for name in names}


def _vacuum_outside_wal(raw: sqlite3.Connection, page_size: int) -> None:
    """Leave WAL, set the page size and VACUUM; return to WAL whatever happened."""
    try:
        (mode,) = raw.execute("PRAGMA journal_mode=DELETE").fetchone()
        if mode != "delete":
            raise ConversionFailed(f"could not leave WAL mode (still {mode}); nothing was changed")
        # VACUUM's copy of the whole database goes to a temporary file, not memory.
        raw.execute("PRAGMA temp_store=FILE")
        raw.execute(f"PRAGMA page_size={int(page_size)}")
        try:
            _vacuum(raw)
        except sqlite3.Error as exc:
            raise ConversionFailed(
                f"VACUUM failed ({exc}) and SQLite rolled it back: the database keeps its old pages "
                "and every row") from exc
    finally:
        (mode,) = raw.execute("PRAGMA journal_mode=WAL").fetchone()
        if mode != "wal":
            raise ConversionFailed(
                f"the database was left in journal mode {mode}: the server's connections put it back in WAL "
                "as they open it (dashboard/settings.py), or run this command again")


def _vacuum(raw: sqlite3.Connection) -> None:
    """The statement that rewrites the whole file: the long step, and where tests make it fail."""
    raw.execute("VACUUM")


def _verify(raw: sqlite3.Connection, path: Path, page_size: int, counts: dict[str, int]) -> None:
    (check,) = raw.execute("PRAGMA quick_check").fetchone()
    now = _describe(raw, path)
    if check != "ok" or now.page_size != page_size or _row_counts(raw) != counts:
        raise ConversionFailed(
            f"{path} did not convert cleanly (quick_check: {check}; page size {now.page_size:,}; "
            "row counts compared with before the VACUUM): restore it from your backup")


def mebibytes(size: int) -> str:
    return f"{size / 1024**2:,.1f} MiB"
