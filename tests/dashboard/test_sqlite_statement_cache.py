"""SQLite connections keep few prepared statements (dashboard/settings.py, ``cached_statements``)."""

import ctypes

import pytest
from django.db import connection


def sqlite_heap() -> int:
    library = ctypes.CDLL("libsqlite3.so.0")
    library.sqlite3_memory_used.restype = ctypes.c_int64
    return library.sqlite3_memory_used()


@pytest.mark.django_db
def test_many_batch_sized_statements_are_not_all_kept_prepared():
    # The flush writes one multi-row statement per batch, its text depending on the batch's size;
    # a connection keeping 128 of them prepared held tens of MiB of SQLite's heap.
    if connection.vendor != "sqlite":
        pytest.skip("SQLite only")
    connection.ensure_connection()
    raw = connection.connection
    before = sqlite_heap()
    raw.execute("SELECT count(*) FROM (VALUES " + ", ".join(["(1)"] * 500) + ")").fetchall()
    if sqlite_heap() == before:  # this Python's sqlite3 links its own SQLite: these counters are not its
        pytest.skip("libsqlite3.so.0 is not the SQLite this Python's sqlite3 uses")
    before = sqlite_heap()
    for rows in range(200, 264):
        values = ", ".join(["(?, ?, ?, ?, ?)"] * rows)
        raw.execute(f"SELECT count(*) FROM (VALUES {values})", [1, 2, 3.0, "type", "data"] * rows).fetchall()
    grown = sqlite_heap() - before
    # 64 statements of ~200-260 rows: ~8-10 MiB if all stay prepared, a quarter of that for 16.
    assert grown < 4 * 1024 * 1024, grown
