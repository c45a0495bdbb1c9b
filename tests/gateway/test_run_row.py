"""A gateway run's row inserted on the serving thread (streams/gateway/run_row.py): the same row the
ORM would write, and never a wait: with the write lock taken elsewhere it leaves the insert to the
database thread at once."""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection

from streams.gateway import proxy, run_row
from streams.models import Run
from streams.upstream.providers import get_provider

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def database_file(tmp_path, user) -> str:
    """A file copy of the test database (the test database itself lives in memory)."""
    path = tmp_path / "db.sqlite3"
    connection.ensure_connection()
    target = sqlite3.connect(path)
    connection.connection.backup(target)
    target.close()
    return str(path)


def gateway_run(user) -> Run:
    request = proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses", query="",
                                   body=b"{}", owner=user)
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi ☂", "n": [1, None]},
                              background=True)
    return proxy._new_run(request, fields, fields.model)


def row(db, pk: int) -> dict:
    cursor = db.execute('SELECT * FROM "streams_run" WHERE id = ?', (pk,))
    return dict(zip([column[0] for column in cursor.description], cursor.fetchone(), strict=True))


def test_a_run_inserted_here_is_the_row_the_orm_writes(database_file, user):
    here = gateway_run(user)
    through_orm = Run(**{field.attname: getattr(here, field.attname) for field in Run._meta.concrete_fields})
    assert run_row.insert_into(here, database_file)
    assert here.pk and not here._state.adding
    through_orm.save(force_insert=True)
    got = row(sqlite3.connect(database_file), here.pk)
    orm_copy = sqlite3.connect(":memory:")
    connection.connection.backup(orm_copy)  # read as stored (Django's own connection converts timestamps)
    want = row(orm_copy, through_orm.pk)
    assert {k: v for k, v in got.items() if k not in ("id", "created_at")} == {
        k: v for k, v in want.items() if k not in ("id", "created_at")}
    assert got["created_at"] and got["request"] == want["request"] and got["source"] == "gateway"


def test_with_the_write_lock_taken_the_insert_is_left_to_the_database_thread_at_once(database_file, user):
    other = sqlite3.connect(database_file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # what a flush on the database thread holds
    try:
        assert not run_row.insert_into(gateway_run(user), database_file)
    finally:
        other.execute("COMMIT")
    assert run_row.insert_into(gateway_run(user), database_file)


def test_an_in_memory_database_is_left_to_the_database_thread(user):
    assert not run_row.insert_into(gateway_run(user), "file:memorydb_default?mode=memory&cache=shared")
