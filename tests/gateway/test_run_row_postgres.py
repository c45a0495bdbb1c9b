"""On PostgreSQL a gateway run's row goes in on the event loop's own connection
(streams/gateway/run_row.insert_on_loop, streams/pipeline/loop_db.py): the row the ORM writes, and
an INSERT that stalls after it was sent ends in one run, never two; a failed statement leaves the
connection to the others using it. With ids reserved ahead (run_row.RunIds, run_row.PendingRow): the
reserved ids are the sequence's, the INSERT's own transaction alone commits without the WAL flush, a
stalled one is sent again and makes one run, and a row lost afterwards is made again by the recorder."""

from __future__ import annotations

import textwrap

from tests.support.scaled import scaled_out_marks, script_on_new_deployment

pytestmark = scaled_out_marks()

SCRIPT = textwrap.dedent("""
    import asyncio, json
    import psycopg
    from django.contrib.auth.models import User
    from django.db import connection
    from streams.gateway import proxy, run_row
    from streams.models import Run
    from streams.pipeline import loop_db
    from streams.upstream.providers import get_provider

    owner = User.objects.get(username="alice")
    request = proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses",
                                   query="", body=b"{}", owner=owner)
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi \\u2602",
                                                        "n": [1, None]}, background=True)
    here = proxy._new_run(request, fields, fields.model)
    twin = Run(**{f.attname: getattr(here, f.attname) for f in Run._meta.concrete_fields})
    # No id reserved yet on this loop: the sequence's own default, committed with the flush.
    out = {"direct": asyncio.run(run_row.insert_on_loop(here)) is run_row.Inserted.FLUSHED, "pk": here.pk}
    twin.save(force_insert=True)
    skip = {"id", "created_at"}
    rows = {r["id"]: {k: v for k, v in r.items() if k not in skip} for r in Run.objects.values()}
    out["same_row"] = rows[here.pk] == rows[twin.pk]
    async def statement_error_keeps_the_connection():
        async with loop_db.postgres() as connection:
            first = connection
        try:
            async with loop_db.postgres() as connection:
                await connection.execute("SELECT 1 / 0")
        except loop_db.NoDirectPath:
            pass
        async with loop_db.postgres() as connection:
            await connection.execute("SELECT 1")
            return connection is first and not first.closed
    out["kept_after_statement_error"] = asyncio.run(statement_error_keeps_the_connection())

    # A stalled INSERT: the table locked by another session, the statement sent and never answered.
    loop_db.DIRECT_TIMEOUT_S = 0.5
    before = Run.objects.count()
    stalled = proxy._new_run(request, fields, fields.model)
    locker = psycopg.connect(connection.settings_dict["NAME"] and " ".join(
        f"{k}={v}" for k, v in connection.get_connection_params().items()
        if k in ("dbname", "user", "host", "port") and v))
    locker.execute("LOCK TABLE streams_run IN ACCESS EXCLUSIVE MODE")
    took = []
    adopt = proxy._adopt_or_insert
    proxy._adopt_or_insert = lambda run: took.append(run) or adopt(run)
    async def create():
        return await proxy._create_run_beside(request, fields, "responses")
    async def both():
        task = asyncio.ensure_future(create())
        await asyncio.sleep(0.8)  # past the timeout: the direct INSERT has given up
        locker.commit()  # the lock goes; the database thread's path may now go on
        return await task
    made = asyncio.run(both())
    locker.close()
    out["after_stall"] = Run.objects.count() - before
    out["made_pk"] = made.pk
    out["looked_first"] = len(took)
    print("RESULT " + json.dumps(out))
""")


RESERVED = textwrap.dedent("""
    import asyncio, json
    import psycopg
    from django.contrib.auth.models import User
    from django.db import connection
    from streams.gateway import proxy, run_row
    from streams.models import Event, Run, RunStatus
    from streams.pipeline import loop_db
    from streams.upstream.providers import get_provider

    owner = User.objects.get(username="alice")
    request = proxy.GatewayRequest(provider=get_provider("simulator"), method="POST", path="responses",
                                   query="", body=b"{}", owner=owner)
    fields = proxy._RunFields(model="sim-text", stored={"model": "sim-text", "input": "hi"}, background=False)
    conninfo = " ".join(f"{k}={v}" for k, v in connection.get_connection_params().items()
                        if k in ("dbname", "user", "host", "port") and v)
    out = {}
    ids = run_row.reserve_ids(6)
    plain = proxy._new_run(request, fields, fields.model)
    plain.save(force_insert=True)
    out["distinct"] = len(set(ids)) == 6
    out["sequence_moved_past"] = plain.pk > max(ids)

    async def create(reserved):
        run = proxy._new_run(request, fields, fields.model)
        run.pk = reserved
        await run_row.PendingRow(run).ensure()
        return run

    async def made_with_a_reserved_id():
        made = await create(ids[0])
        async with loop_db.postgres() as c:
            setting = (await (await c.execute("SHOW synchronous_commit")).fetchone())[0]
        return made, setting
    made, out["loop_setting_after"] = asyncio.run(made_with_a_reserved_id())
    out["reserved_pk"] = made.pk == ids[0]
    out["unflushed"] = run_row.unflushed(made)
    out["orm_run_flushed"] = not run_row.unflushed(plain)

    # The statement as sent: its own transaction commits without the flush; sent again it adds nothing.
    twin = proxy._new_run(request, fields, fields.model)
    twin.pk = ids[1]
    orm = Run(**{f.attname: getattr(twin, f.attname) for f in Run._meta.concrete_fields})
    orm.pk = ids[2]
    orm.save(force_insert=True)
    sql, params = run_row._insert_sql(twin, "%s", reserved=True)
    with psycopg.connect(conninfo, autocommit=True) as c:
        out["first"] = c.execute(sql, params).fetchall()
        out["again"] = c.execute(sql, params).fetchall()
        out["session_after"] = c.execute("SHOW synchronous_commit").fetchone()[0]
    skip = {"id", "created_at"}
    rows = {r["id"]: {k: v for k, v in r.items() if k not in skip} for r in Run.objects.values()}
    out["same_row"] = rows[ids[1]] == rows[ids[2]]

    # A stalled INSERT of a reserved id: sent again on the database thread, not looked for; one run.
    loop_db.DIRECT_TIMEOUT_S = 0.5
    before = Run.objects.count()
    locker = psycopg.connect(conninfo)
    locker.execute("LOCK TABLE streams_run IN ACCESS EXCLUSIVE MODE")
    looked = []
    proxy._adopt_or_insert = lambda run: looked.append(run)
    async def stalled():
        task = asyncio.ensure_future(create(ids[3]))
        await asyncio.sleep(0.8)
        locker.commit()
        return await task
    stalled_run = asyncio.run(stalled())
    locker.close()
    out["stall"] = {"rows": Run.objects.count() - before, "pk": stalled_run.pk == ids[3], "looked": len(looked)}

    # A row lost after its unflushed commit (a crash of PostgreSQL, played by a DELETE): made again.
    async def lost(reserved):
        made = await create(reserved)
        recorder = proxy._recorder(made, "responses", fields)
        recorder.begin(made, [])
        with psycopg.connect(conninfo, autocommit=True) as other:
            other.execute("DELETE FROM streams_run WHERE id = %s", (made.pk,))
        recorder.take(b'event: response.output_text.delta\\ndata: {"type":"response.output_text.delta",'
                      b'"sequence_number":1,"delta":"hello"}\\n\\n', 1.0)
        recorder.take_end(2.0)
        await recorder.end(RunStatus.COMPLETED, None)
        return made
    restored = asyncio.run(lost(ids[4]))
    row = Run.objects.get(pk=restored.pk)
    out["restored"] = {"pk": restored.pk == ids[4], "status": row.status, "events": Event.objects.filter(
        run_id=restored.pk).count(), "code": (row.error or {}).get("code"), "owner": row.owner_id == owner.pk}
    print("RESULT " + json.dumps(out))
""")


def test_reserved_ids_insert_without_the_flush_send_again_safely_and_a_lost_row_is_made_again(tmp_path):
    result = script_on_new_deployment(tmp_path, RESERVED)
    assert result["distinct"] and result["sequence_moved_past"]  # never handed out again
    assert result["reserved_pk"] and result["unflushed"] and result["orm_run_flushed"]
    assert result["loop_setting_after"] == "on"  # only the INSERT's own transaction skips the flush
    assert result["first"] == [["off"]] and result["again"] == [] and result["session_after"] == "on"
    assert result["same_row"]  # the row the ORM writes, its id given
    assert result["stall"] == {"rows": 1, "pk": True, "looked": 0}
    assert result["restored"] == {"pk": True, "status": "completed", "events": 1, "code": "recording_retried",
                                  "owner": True}


def test_the_loop_connections_insert_is_the_orms_row_and_a_stalled_one_makes_one_run(tmp_path):
    result = script_on_new_deployment(tmp_path, SCRIPT)
    assert result["direct"] is True and result["pk"]
    assert result["same_row"]
    assert result["kept_after_statement_error"]  # others' statements on it are not cut
    assert result["looked_first"] == 1  # the unanswered INSERT was not simply sent again
    assert result["after_stall"] == 1 and result["made_pk"]
