"""The SQLite connection settings the store's rounds rely on (dashboard/settings.py's init_command)."""

from __future__ import annotations

import sqlite3

import pytest
from django.conf import settings

from streams.pipeline.store import chunk_sizes

RUNS = 60


def written_syscalls() -> int:
    """Write syscalls of this thread alone (SQLite writes on the caller's thread; another thread's
    log line or pytest's capture would otherwise count)."""
    with open("/proc/thread-self/io") as io:
        return int(next(line for line in io if line.startswith("syscw:")).split()[1])


def connect(path) -> sqlite3.Connection:
    """A file database opened as the project opens SQLite (the test database lives in memory)."""
    db = sqlite3.connect(path, isolation_level=None)
    for command in settings.DATABASES["default"]["OPTIONS"]["init_command"].split(";"):
        if command.strip():
            db.execute(command)
    return db


@pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3", reason="SQLite only")
def test_a_rounds_insert_writes_nothing_before_its_commit(tmp_path):
    # A round appends a few rows to each of many runs: the statement changes every run's leaf page
    # of the (run, seq) index, and SQLite journals those pages for the statement alone. On disk that
    # journal cost two writes per page, about one per event stored.
    db = connect(tmp_path / "db.sqlite3")
    db.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, run_id INT NOT NULL, seq INT NOT NULL, t REAL,"
               " type TEXT, data TEXT, UNIQUE (run_id, seq))")
    data = '{"type":"response.output_text.delta","delta":" word","obfuscation":"xxxxxxxxxxxx"}'

    def insert(seqs: range) -> None:
        rows = [(run, seq, 1.0, "delta", data) for seq in seqs for run in range(RUNS)]
        for count, _size in chunk_sizes(len(rows)):
            chunk, rows = rows[:count], rows[count:]
            values = ", ".join(["(?, ?, ?, ?, ?)"] * count)
            db.execute(f"INSERT INTO event (run_id, seq, t, type, data) VALUES {values}",
                       [value for row in chunk for value in row])

    db.execute("BEGIN IMMEDIATE")
    insert(range(400))
    db.execute("COMMIT")
    db.execute("BEGIN IMMEDIATE")
    before = written_syscalls()
    insert(range(400, 405))
    written = written_syscalls() - before
    db.execute("COMMIT")
    db.close()
    assert written == 0
