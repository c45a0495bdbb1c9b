"""On PostgreSQL the ends of runs ending together are written in one ``UPDATE ... FROM (VALUES ...)``
(streams/pipeline/ends.py), on a connection of their own: every value lands as the ORM would write it
(JSON, NULL, text, times, figures), a run named twice keeps its later fields, no other run is touched;
and runs finishing side by side through their recorders end with every event stored."""

from __future__ import annotations

import textwrap

from tests.support.scaled import scaled_out_marks, script_on_new_deployment

pytestmark = scaled_out_marks()

SCRIPT = textwrap.dedent("""
    import asyncio, datetime, json
    from django.contrib.auth.models import User
    from django.db import connection
    from streams.live.recorder import RunRecorder
    from streams.models import Event, Run, RunStatus
    from streams.pipeline import ends
    from streams.protocol.sse import SSEFrame

    owner = User.objects.get(username="alice")
    new = lambda: Run.objects.create(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING)
    runs = [new() for _ in range(5)]
    by_orm = new()
    bystander = new()
    done = datetime.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)

    def final(i):
        return {"status": RunStatus.FAILED if i % 2 else RunStatus.COMPLETED,
                "error": {"message": f"no {i} \\u00e9", "code": "x"} if i % 2 else None,
                "output_text": f"text {i} \\U0001f389 " * 50, "usage": {"output_tokens": i} if i % 3 else None,
                "metrics": {"events": i, "nested": [1, 2.5, None]}, "duration_ms": 12.5 * i,
                "ttfb_ms": None, "tokens_per_s": float(i), "finished_at": done, "event_count": i,
                "heartbeat_at": done, "last_upstream_seq": i, "response_id": f"resp_{i}"}

    statements = []

    def capture(execute, sql, params, many, context):
        if sql.startswith("UPDATE"):
            statements.append(sql[:40])
        return execute(sql, params, many, context)

    with connection.execute_wrapper(capture):
        ends.end_runs([(run.pk, final(i)) for i, run in enumerate(runs)]
                      + [(runs[0].pk, {**final(0), "output_text": "later", "status": RunStatus.CANCELLED})])
    through_django = list(statements)
    Run.objects.filter(pk=by_orm.pk).update(**final(3))

    def row(pk):
        run = Run.objects.get(pk=pk)
        return [run.status, run.error, run.output_text, run.usage, run.metrics, run.duration_ms, run.ttfb_ms,
                run.tokens_per_s, run.finished_at == done, run.event_count, run.heartbeat_at == done,
                run.last_upstream_seq, run.response_id]

    out = {"statements": through_django, "rows": [row(run.pk) for run in runs], "orm": row(by_orm.pk),
           "bystander": row(bystander.pk)}

    def frame(payload, event=""):
        data = json.dumps(payload)
        return SSEFrame(event=event, data=data, id=None, nbytes=len(data))

    async def finish_side_by_side():
        recorders = []
        for _ in range(8):
            run = await Run.objects.acreate(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING)
            recorder = RunRecorder(run.pk)
            for seq in range(3):
                recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": seq,
                                             "delta": f"w{seq} "}), float(seq))
            await recorder.flush()
            recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 3,
                                         "delta": "w3"}), 3.0)
            recorders.append(recorder)
        await asyncio.gather(*(r._finish(RunStatus.COMPLETED, None) for r in recorders))
        result = []
        for recorder in recorders:
            run = await Run.objects.aget(pk=recorder.run_id)
            result.append([run.status, run.event_count, run.output_text,
                           await Event.objects.filter(run_id=run.pk).acount()])
        return result

    out["recorders"] = asyncio.run(finish_side_by_side())
    print("RESULT " + json.dumps(out))
""")


def test_runs_ends_go_in_one_statement_with_every_value_as_the_orm_writes_it(tmp_path):
    result = script_on_new_deployment(tmp_path, SCRIPT)
    assert result["statements"] == []  # not through Django's cursor: no UPDATE per run (nor a debug log of texts)
    rows = result["rows"]
    assert rows[0][:3] == ["cancelled", None, "later"]  # named twice: the later fields
    assert rows[3] == result["orm"]  # as Run.objects.update(...) writes them
    for i, row in enumerate(rows[1:], start=1):
        assert row == [
            "failed" if i % 2 else "completed", {"message": f"no {i} \u00e9", "code": "x"} if i % 2 else None,
            f"text {i} \U0001f389 " * 50, {"output_tokens": i} if i % 3 else None,
            {"events": i, "nested": [1, 2.5, None]}, 12.5 * i, None, float(i), True, i, True, i, f"resp_{i}"]
    assert result["bystander"][:3] == ["streaming", None, ""] and result["bystander"][9] == 0
    assert result["recorders"] == [["completed", 4, "w0 w1 w2 w3", 4]] * 8
