"""SQLite's WAL checkpointed by a thread of its own (streams/pipeline/wal_checkpoints.py), not by the
connection that stores the events."""

from __future__ import annotations

import shutil
import sqlite3
import time

import pytest
from django.conf import settings

from streams.pipeline import store, wal_checkpoints
from streams.pipeline.wal_checkpoints import CHECKPOINT_ROWS, WRITER_AUTOCHECKPOINT_PAGES, Checkpointer

pytestmark = pytest.mark.skipif(settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3",
                                reason="SQLite only")


def connect(path) -> sqlite3.Connection:
    """A file database opened as the project opens SQLite (the test database lives in memory)."""
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    for command in settings.DATABASES["default"]["OPTIONS"]["init_command"].split(";"):
        if command.strip():
            db.execute(command)
    return db


def rows_in_database_file(path, tmp_path) -> int:
    """Rows in the database file alone, without its WAL: what checkpoints have copied there."""
    alone = tmp_path / "alone.sqlite3"
    shutil.copyfile(path, alone)
    db = sqlite3.connect(alone)
    try:
        return db.execute("SELECT count(*) FROM event").fetchone()[0]
    finally:
        db.close()


def wait_for(condition) -> None:
    for _ in range(500):  # the checkpointer's thread: up to 5 s (never timed, only waited for)
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError("the checkpointer did not run")


class FakeDjangoConnection:
    def __init__(self, raw, path):
        self.connection = raw
        self.settings_dict = {"NAME": str(path)}

    def is_in_memory_db(self):
        return False


def test_the_writers_log_is_checkpointed_by_the_checkpointer_thread(tmp_path):
    path = tmp_path / "db.sqlite3"
    db = connect(path)
    db.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, data TEXT)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the table in the database file
    checkpointer = wal_checkpoints.hand_over(FakeDjangoConnection(db, path))
    try:
        assert db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == WRITER_AUTOCHECKPOINT_PAGES
        data = "x" * 300
        db.execute("BEGIN IMMEDIATE")
        db.executemany("INSERT INTO event (data) VALUES (?)", [(data,)] * 3000)  # ~250 pages: no autocheckpoint
        db.execute("COMMIT")
        assert rows_in_database_file(path, tmp_path) == 0  # all in the log still
        checkpointer.written(CHECKPOINT_ROWS)
        wait_for(lambda: checkpointer.checkpoints >= 1)
        assert rows_in_database_file(path, tmp_path) == 3000
    finally:
        checkpointer.stop()
        del wal_checkpoints._checkpointers[str(path)]
        db.close()


def test_a_quiet_writer_is_checkpointed_within_the_period(tmp_path, monkeypatch):
    monkeypatch.setattr(wal_checkpoints, "CHECKPOINT_EVERY_S", 0.05)
    path = tmp_path / "db.sqlite3"
    db = connect(path)
    db.execute("CREATE TABLE event (id INTEGER PRIMARY KEY, data TEXT)")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpointer = Checkpointer(str(path))
    try:
        db.execute("INSERT INTO event (data) VALUES ('a')")
        checkpointer.written(1)  # far fewer rows than CHECKPOINT_ROWS
        wait_for(lambda: checkpointer.checkpoints >= 1)
        assert rows_in_database_file(path, tmp_path) == 1
    finally:
        checkpointer.stop()
        db.close()


@pytest.mark.django_db
def test_the_store_tells_the_checkpointer_what_it_wrote(monkeypatch, user):
    from streams.models import Run

    told = []

    class Counting:
        def written(self, rows):
            told.append(rows)

    monkeypatch.setattr(wal_checkpoints, "hand_over", lambda connection: Counting())
    run = Run.objects.create(owner=user, provider="simulator", model="m")
    store.append_many([(run.pk, [(run.pk, seq, 1.0, "x", "{}") for seq in range(300)], None)])
    assert told == [300]


@pytest.mark.django_db
def test_a_database_in_memory_has_no_checkpointer():
    from django.db import connection

    connection.ensure_connection()
    assert connection.is_in_memory_db()
    assert wal_checkpoints.hand_over(connection) is None
