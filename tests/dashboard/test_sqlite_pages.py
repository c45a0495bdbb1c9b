"""New SQLite databases get 16 KiB pages (dashboard/sqlite_pages.py); every connection checkpoints
its log every ~4 MB (streams/pipeline/checkpoints.py, until a server's loop takes that over)."""

import sqlite3

import pytest
from django.conf import settings
from django.db.backends.sqlite3.base import DatabaseWrapper

from streams.pipeline.checkpoints import WAL_CHECKPOINT_BYTES, checkpoint_pages


@pytest.fixture(autouse=True)
def _unblocked(django_db_blocker):
    # Connections of their own to files of their own, not the test database.
    with django_db_blocker.unblock():
        yield


def open_database(path):
    """A Django connection to ``path`` with the project's SQLite settings (its init_command and the
    connection_created receivers), as the server would open it."""
    if settings.DATABASES["default"]["ENGINE"] != "django.db.backends.sqlite3":
        pytest.skip("SQLite only")
    wrapper = DatabaseWrapper({**settings.DATABASES["default"], "NAME": str(path)}, alias="pages-test")
    wrapper.ensure_connection()
    return wrapper


def pragma(wrapper, name):
    return wrapper.connection.execute(f"PRAGMA {name}").fetchone()[0]


def test_a_new_database_has_16_kib_pages_and_checkpoints_every_4_mb(tmp_path):
    wrapper = open_database(tmp_path / "new.sqlite3")
    try:
        with wrapper.cursor() as cursor:
            cursor.execute("CREATE TABLE t (x)")
        assert pragma(wrapper, "page_size") == 16384
        assert pragma(wrapper, "journal_mode") == "wal"
        assert pragma(wrapper, "wal_autocheckpoint") == 250
    finally:
        wrapper.close()
    # The size is the file's own: a plain connection reads it back.
    with sqlite3.connect(tmp_path / "new.sqlite3") as plain:
        assert plain.execute("PRAGMA page_size").fetchone()[0] == 16384


def test_an_existing_database_keeps_its_pages_and_its_checkpoint_interval(tmp_path):
    path = tmp_path / "old.sqlite3"
    old = sqlite3.connect(path)
    old.execute("PRAGMA page_size=4096")
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")
    old.commit()
    old.close()
    wrapper = open_database(path)
    try:
        assert pragma(wrapper, "page_size") == 4096
        assert pragma(wrapper, "wal_autocheckpoint") == 1000  # SQLite's own default, as before
    finally:
        wrapper.close()


@pytest.mark.parametrize("page_size, pages", [(1024, 4000), (4096, 1000), (16384, 250), (65536, 62)])
def test_the_interval_is_the_same_bytes_whatever_the_page_size(page_size, pages):
    assert checkpoint_pages(page_size) == pages
    assert abs(pages * page_size - WAL_CHECKPOINT_BYTES) < page_size
