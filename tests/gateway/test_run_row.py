"""A gateway run's row inserted on the serving thread (streams/gateway/run_row.py): the same row the
ORM would write, and never a wait: with the write lock taken elsewhere it leaves the insert to the
database thread at once. On PostgreSQL (the event loop's connection, tests/gateway/test_run_row_postgres.py
for the real thing): an INSERT whose answer was lost is looked for before it is made again."""

from __future__ import annotations

import socket
import sqlite3
from types import SimpleNamespace

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from streams.gateway import proxy, run_row
from streams.models import Run
from streams.pipeline import loop_db
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


def gateway_request(user) -> tuple[proxy.GatewayRequest, proxy._RunFields]:
    request = proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses", query="",
                                   body=b"{}", owner=user)
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi ☂", "n": [1, None]},
                              background=True)
    return request, fields


def gateway_run(user) -> Run:
    request, fields = gateway_request(user)
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


async def test_an_insert_that_reached_the_server_unanswered_is_adopted_not_made_twice(user, monkeypatch):
    # The loop's connection lost after its INSERT committed (streams/gateway/run_row.MaybeInserted).
    async def committed_then_lost(run):
        await sync_to_async(Run(**{f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields
                                   if f.attname != "id"}).save)(force_insert=True)
        raise run_row.MaybeInserted("connection lost")

    monkeypatch.setattr(proxy, "insert_here", lambda run: False)  # as on PostgreSQL, whatever the test database
    monkeypatch.setattr(proxy, "insert_on_loop", committed_then_lost)
    request, fields = gateway_request(user)
    made = await proxy._create_run_beside(request, fields, "responses")
    assert made.pk and await Run.objects.acount() == 1
    assert made.source == "gateway" and made.request == fields.stored


async def test_an_insert_lost_before_the_server_kept_it_is_made_once_on_the_database_thread(user, monkeypatch):
    async def lost(run):
        raise run_row.MaybeInserted("connection lost")

    monkeypatch.setattr(proxy, "insert_here", lambda run: False)
    monkeypatch.setattr(proxy, "insert_on_loop", lost)
    request, fields = gateway_request(user)
    made = await proxy._create_run_beside(request, fields, "responses")
    assert made.pk and await Run.objects.acount() == 1


async def test_the_loops_connection_gives_way_to_the_database_thread_and_stops_trying_for_a_while(monkeypatch):
    pytest.importorskip("psycopg")
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    database = {"ENGINE": "django.db.backends.postgresql", "NAME": "nothing", "USER": "", "PASSWORD": "",
                "HOST": "127.0.0.1", "PORT": port}
    monkeypatch.setattr(loop_db, "settings", SimpleNamespace(DATABASES={"default": database}))
    with pytest.raises(loop_db.NoDirectPath) as refused:
        async with loop_db.postgres():
            pass
    assert not refused.value.connected  # nothing was sent: a caller may do the work elsewhere
    with pytest.raises(loop_db.NoDirectPath, match="moments ago"):  # no second connect per request
        async with loop_db.postgres():
            pass


def test_a_fallback_is_logged_once_per_kind(caplog, monkeypatch):
    monkeypatch.setattr(loop_db, "_fallbacks_noted", set())
    refused = loop_db.NoDirectPath("ConnectionRefusedError: no")
    refused.__cause__ = ConnectionRefusedError("no")
    with caplog.at_level("WARNING", logger="streams.pipeline.loop_db"):
        for _ in range(3):
            loop_db.note_fallback("inserting a run", refused)
        loop_db.note_fallback("inserting a run", loop_db.NoDirectPath("a connect failed moments ago"))
        loop_db.note_fallback("reading a token", refused)
    assert len(caplog.records) == 3
    assert "ConnectionRefusedError" in caplog.records[0].getMessage()


async def test_an_unanswered_insert_of_a_reserved_id_is_sent_again_and_makes_one_run(user, monkeypatch):
    # With its id reserved ahead the INSERT is idempotent: sent again, not looked for first.
    async def sent_unanswered(run, sent_before, kept: bool):
        if kept:  # the server committed it before the answer was lost
            await sync_to_async(Run(**{f.attname: getattr(run, f.attname) for f in Run._meta.concrete_fields}).save)(
                force_insert=True)
        raise run_row.MaybeInserted("connection lost")

    monkeypatch.setattr(run_row, "insert_here", lambda run, reserved=False, sent_before=False: False)
    monkeypatch.setattr(proxy, "_adopt_or_insert", lambda run: pytest.fail("looked for instead of sent again"))
    request, fields = gateway_request(user)
    for kept in (True, False):
        await Run.objects.all().adelete()
        monkeypatch.setattr(run_row, "insert_reserved_on_loop",
                            lambda run, sent_before, kept=kept: sent_unanswered(run, sent_before, kept))
        made = proxy._new_run(request, fields, fields.model)
        made.pk = 4242
        assert await run_row.PendingRow(made).ensure()
        assert made.pk == 4242 and not made._state.adding
        assert [r.pk for r in await sync_to_async(list)(Run.objects.all())] == [4242]
        assert (await Run.objects.aget()).request == fields.stored


async def test_run_ids_are_reserved_ahead_in_the_background_and_a_failed_reservation_waits(monkeypatch):
    blocks = iter([[101, 102, 103, 104], [105, 106, 107, 108]])
    asked: list[int] = []

    def reserve(count: int) -> list[int]:
        asked.append(count)
        block = next(blocks, None)
        if block is None:
            raise RuntimeError("the database is down")
        return block

    monkeypatch.setattr(run_row, "reserve_ids", reserve)
    monkeypatch.setattr(run_row, "ID_LOW", 2)
    ids = run_row.RunIds()
    assert ids.take() is None  # nothing reserved yet: the sequence's own default, this once
    await ids.reserving
    assert [ids.take(), ids.take()] == [101, 102]
    assert ids.take() == 103  # two were left: the next block is on its way meanwhile
    await ids.reserving
    assert list(ids.ids) == [104, 105, 106, 107, 108]
    taken = [ids.take() for _ in range(4)]
    assert taken == [104, 105, 106, 107]
    await ids.reserving  # the third reservation fails
    assert [ids.take(), ids.take()] == [108, None]
    assert ids.reserving is None and len(asked) == 3  # no new try at every request after a failure
    assert asked[0] == run_row.ID_BLOCK


async def test_the_id_reservation_runs_in_a_context_of_its_own(monkeypatch):
    """Not in the context of the request that needed an id (on Django's view path its database work
    would run on that request's own thread and connection; found in review)."""
    import contextvars

    marker: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_marker", default=None)
    seen = []
    monkeypatch.setattr(run_row, "reserve_ids", lambda count: (seen.append(marker.get()), [7, 8])[1])
    marker.set("the request's")
    ids = run_row.RunIds()
    assert ids.take() is None  # none yet: the reservation starts
    await ids.reserving
    assert seen == [None] and list(ids.ids) == [7, 8]
