"""manage.py sqlite_pages: an existing 4 KiB database's report, and its conversion to the page size new
databases get, refused while anything else has it open (dashboard/sqlite_pages.py)."""

import io
import itertools
import sqlite3
import subprocess
import sys
from collections import namedtuple

import pytest
from django.core.management import CommandError, call_command

from dashboard import sqlite_pages
from dashboard.sqlite_pages import PAGE_SIZE, ConversionRefused, database_path

TABLES = {"streams_run": 300, "streams_event": 5_000}


def make_database(path, page_size=4096):
    """A WAL database with ``page_size`` pages, a few thousand rows, an index and a full-text table
    (as streams.0005 makes on SQLite)."""
    raw = sqlite3.connect(path, isolation_level=None)
    raw.execute(f"PRAGMA page_size={page_size}")
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("CREATE TABLE streams_run (id INTEGER PRIMARY KEY, output TEXT)")
    raw.execute("CREATE TABLE streams_event (id INTEGER PRIMARY KEY, run_id INTEGER, seq INTEGER, payload TEXT)")
    raw.execute("CREATE UNIQUE INDEX event_run_seq ON streams_event (run_id, seq)")
    raw.execute("CREATE VIRTUAL TABLE streams_run_fts USING fts5(output)")
    raw.execute("BEGIN")
    raw.executemany("INSERT INTO streams_run (output) VALUES (?)",
                    [(f"answer {i} " * 20,) for i in range(TABLES["streams_run"])])
    raw.executemany("INSERT INTO streams_event (run_id, seq, payload) VALUES (?, ?, ?)",
                    [(i % 300, i, f'{{"delta": "token {i}"}}') for i in range(TABLES["streams_event"])])
    raw.execute("INSERT INTO streams_run_fts (rowid, output) SELECT id, output FROM streams_run")
    raw.execute("COMMIT")
    raw.close()
    return path


State = namedtuple("State", "page_size journal_mode rows fts_hits quick_check")


def state(path):
    """What a fresh connection finds in the file."""
    raw = sqlite3.connect(path)
    try:
        return State(
            raw.execute("PRAGMA page_size").fetchone()[0],
            raw.execute("PRAGMA journal_mode").fetchone()[0],
            {table: raw.execute(f"SELECT count(*) FROM {table}").fetchone()[0] for table in TABLES},
            raw.execute("SELECT count(*) FROM streams_run_fts WHERE streams_run_fts MATCH 'answer'").fetchone()[0],
            raw.execute("PRAGMA quick_check").fetchone()[0],
        )
    finally:
        raw.close()


def run(*args):
    out = io.StringIO()
    call_command("sqlite_pages", *args, stdout=out, stderr=out)
    return out.getvalue()


def test_convert_gives_a_4_kib_wal_database_the_new_page_size_and_keeps_every_row(tmp_path):
    path = make_database(tmp_path / "old.sqlite3")
    assert state(path) == State(4096, "wal", TABLES, 300, "ok")

    out = run("--convert", "--file", str(path))

    assert state(path) == State(PAGE_SIZE, "wal", TABLES, 300, "ok")
    assert "converted: 16,384-byte pages" in out and "was 4,096-byte pages" in out
    assert "all kept" in out
    assert not (tmp_path / "old.sqlite3-journal").exists()


def test_the_report_shows_pages_and_size_and_changes_nothing(tmp_path):
    path = make_database(tmp_path / "old.sqlite3")
    before = path.read_bytes()

    out = run("--file", str(path))

    assert "4,096-byte pages" in out and " MiB" in out and "journal mode wal" in out
    assert "--convert rewrites this one" in out
    assert path.read_bytes() == before
    assert state(path).page_size == 4096


def test_a_database_already_at_the_new_page_size_is_left_alone(tmp_path):
    path = make_database(tmp_path / "new.sqlite3", page_size=PAGE_SIZE)
    before = path.read_bytes()

    for args in ((), ("--convert",)):
        out = run(*args, "--file", str(path))
        assert "16,384-byte pages new databases get: nothing to convert" in out
        assert "converting" not in out
    assert path.read_bytes() == before


@pytest.mark.parametrize("hold", ["write transaction", "idle connection"])
def test_a_database_another_connection_has_open_is_refused_and_left_unchanged(tmp_path, hold):
    path = make_database(tmp_path / "busy.sqlite3")
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("SELECT count(*) FROM streams_run").fetchone()
        if hold == "write transaction":
            other.execute("BEGIN IMMEDIATE")
            other.execute("INSERT INTO streams_run (output) VALUES ('being written')")
        with pytest.raises(CommandError, match="in use by another connection: stop the server and the stream workers"):
            run("--convert", "--file", str(path))
        # The other connection carries on, and its write lands.
        if hold == "write transaction":
            other.execute("COMMIT")
        assert other.execute("SELECT count(*) FROM streams_run").fetchone()[0] >= TABLES["streams_run"]
    finally:
        other.close()
    after = state(path)
    assert (after.page_size, after.journal_mode, after.quick_check) == (4096, "wal", "ok")
    assert after.rows["streams_event"] == TABLES["streams_event"]


def test_a_vacuum_that_fails_midway_leaves_the_old_pages_in_wal_mode(tmp_path, monkeypatch):
    path = make_database(tmp_path / "old.sqlite3")
    vacuum = sqlite_pages._vacuum

    def interrupted_vacuum(raw):
        # SQLite's own interrupt, once, partway through the VACUUM's statements.
        calls = itertools.count()
        raw.set_progress_handler(lambda: next(calls) == 20, 100)
        vacuum(raw)

    monkeypatch.setattr(sqlite_pages, "_vacuum", interrupted_vacuum)

    with pytest.raises(CommandError, match="VACUUM failed .*interrupted.* keeps its old pages and every row"):
        run("--convert", "--file", str(path))

    assert state(path) == State(4096, "wal", TABLES, 300, "ok")


def test_too_little_free_disk_is_refused_before_anything_changes(tmp_path, monkeypatch):
    path = make_database(tmp_path / "old.sqlite3")
    before = path.read_bytes()
    usage = sqlite_pages.shutil.disk_usage(tmp_path)
    monkeypatch.setattr(sqlite_pages.shutil, "disk_usage",
                        lambda directory: usage._replace(free=path.stat().st_size))

    with pytest.raises(CommandError, match="converting needs about .* MiB free on the disk of .*free some space first"):
        run("--convert", "--file", str(path))

    assert path.read_bytes() == before


def test_a_missing_file_is_refused_and_not_created(tmp_path):
    path = tmp_path / "nothing.sqlite3"
    for args in ((), ("--convert",)):
        with pytest.raises(CommandError, match="no SQLite database at"):
            run(*args, "--file", str(path))
    assert not path.exists()


def test_postgresql_is_refused():
    scaled = {"ENGINE": "django.db.backends.postgresql", "NAME": "streamscope"}
    with pytest.raises(ConversionRefused, match="not SQLite .*nothing to convert"):
        database_path(scaled)


def test_the_default_database_is_its_sqlite_file(tmp_path):
    embedded = {"ENGINE": "django.db.backends.sqlite3", "NAME": str(tmp_path / "streamscope.sqlite3")}
    assert database_path(embedded) == tmp_path / "streamscope.sqlite3"


def killed_mid_write(path):
    """A 4 KiB database as a process killed inside a write transaction in rollback-journal mode leaves
    it (a conversion killed mid-VACUUM, say): a hot journal beside it."""
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA page_size=4096")
    raw.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, s TEXT)")
    raw.executemany("INSERT INTO t (s) VALUES (?)", [("x" * 200,)] * 2000)
    raw.commit()
    raw.close()
    code = (f"import os, sqlite3; c = sqlite3.connect({str(path)!r}); c.execute('PRAGMA cache_size=1');"
            "c.execute('BEGIN EXCLUSIVE'); c.execute('UPDATE t SET s = s || \"y\"'); os._exit(9)")
    subprocess.run([sys.executable, "-c", code], check=False)
    assert path.with_name(path.name + "-journal").stat().st_size > 0


def test_the_report_of_a_database_with_an_unfinished_write_says_so_and_changes_nothing(tmp_path):
    path = tmp_path / "db.sqlite3"
    killed_mid_write(path)
    journal = path.with_name(path.name + "-journal").read_bytes()
    with pytest.raises(CommandError, match="unfinished write"):
        run("--file", str(path))
    assert path.with_name(path.name + "-journal").read_bytes() == journal


def test_convert_rolls_an_unfinished_write_back_first_and_converts(tmp_path):
    path = tmp_path / "db.sqlite3"
    killed_mid_write(path)
    run("--file", str(path), "--convert")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        # every row as before the cut-off write: none has the "y" it was adding
        assert raw.execute("SELECT count(*), sum(s = ?) FROM t", ("x" * 200,)).fetchone() == (2000, 2000)
    finally:
        raw.close()


@pytest.mark.parametrize("journal_mode", ["persist", "truncate"])
def test_a_journal_left_by_a_finished_write_is_not_an_unfinished_one(tmp_path, journal_mode):
    # PERSIST keeps its journal after each commit with the header zeroed, TRUNCATE an empty one:
    # SQLite rolls neither back, and the report and --convert must not take them for a cut-off write.
    path = tmp_path / "db.sqlite3"
    raw = sqlite3.connect(path)
    raw.execute("PRAGMA page_size=4096")
    raw.execute(f"PRAGMA journal_mode={journal_mode}")
    raw.execute("CREATE TABLE t (x)")
    raw.executemany("INSERT INTO t VALUES (?)", [(n,) for n in range(100)])
    raw.commit()
    raw.close()
    assert path.with_name(path.name + "-journal").exists()
    assert "4,096-byte pages" in run("--file", str(path))
    run("--file", str(path), "--convert")
    raw = sqlite3.connect(path)
    try:
        assert raw.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE
        assert raw.execute("SELECT count(*) FROM t").fetchone()[0] == 100
    finally:
        raw.close()
