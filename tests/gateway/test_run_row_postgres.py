"""On PostgreSQL a gateway run's row goes in on the event loop's own connection
(streams/gateway/run_row.insert_on_loop, streams/pipeline/loop_db.py): the row the ORM writes, and
an INSERT that stalls after it was sent ends in one run, never two; a failed statement leaves the
connection to the others using it."""

from __future__ import annotations

import json
import textwrap

from tests.support.scaled import Deployment, scaled_out_marks

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
    out = {"direct": asyncio.run(run_row.insert_on_loop(here)), "pk": here.pk}
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


def test_the_loop_connections_insert_is_the_orms_row_and_a_stalled_one_makes_one_run(tmp_path):
    deployment = Deployment(tmp_path)
    try:
        deployment.setup()
        script = tmp_path / "check.py"
        script.write_text(SCRIPT)
        output = deployment.manage("shell", "-c", f"exec(open({str(script)!r}).read())")
        result = json.loads(output.split("RESULT ", 1)[1])
        assert result["direct"] is True and result["pk"]
        assert result["same_row"]
        assert result["kept_after_statement_error"]  # others' statements on it are not cut
        assert result["looked_first"] == 1  # the unanswered INSERT was not simply sent again
        assert result["after_stall"] == 1 and result["made_pk"]
    finally:
        deployment.close()
