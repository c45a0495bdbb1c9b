"""On PostgreSQL a flush round updates its runs' rows in a few ``UPDATE ... FROM (VALUES ...)``
statements (streams/pipeline/store._update_runs), not one UPDATE per run: every value lands as
the ORM would write it, a run named twice in a round keeps its later fields, padding rows touch no
run, a value too long for its column is refused, not cut, and DEBUG's query log keeps no round's texts."""

from __future__ import annotations

import textwrap

from tests.support.scaled import scaled_out_marks, script_on_new_deployment

pytestmark = scaled_out_marks()

SCRIPT = textwrap.dedent("""
    import datetime, json
    from django.contrib.auth.models import User
    from django.db import DataError, connection, reset_queries
    from streams.models import Run, RunStatus
    from streams.pipeline import store

    owner = User.objects.get(username="alice")
    runs = [Run.objects.create(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING)
            for _ in range(21)]
    bystander = Run.objects.create(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING,
                                   event_count=7, output_text="untouched")
    beat = datetime.datetime(2026, 11, 30, 12, 0, 0, 123456, tzinfo=datetime.timezone.utc)
    statements = []

    def capture(execute, sql, params, many, context):
        if sql.startswith("UPDATE"):
            statements.append(many)
        return execute(sql, params, many, context)

    batches = []
    for i, run in enumerate(runs):
        row = (run.pk, 0, 0.5, "response.output_text.delta", json.dumps({"delta": "x"}))
        fields = {"event_count": i + 1, "heartbeat_at": beat, "output_text": f"text {i} \\u00e9\\U0001f389",
                  "response_id": f"resp_{i}", "last_upstream_seq": None if i % 2 else i}
        batches.append((run.pk, [row], fields))
    # The first run again in the same round, later: its later fields win, as one UPDATE after another.
    batches.append((runs[0].pk, [(runs[0].pk, 1, 0.6, "response.output_text.delta", "{}")],
                    {"event_count": 99, "heartbeat_at": beat, "output_text": "later", "response_id": "resp_later",
                     "last_upstream_seq": 5}))
    built = []
    real_statement = getattr(store, "_update_statement", None)
    if real_statement is not None:
        store._update_statement = lambda *args: (built.append(args[-1]), real_statement(*args))[1]
    batches[1][2]["output_text"] = "y" * 100_000
    connection.force_debug_cursor = True  # DEBUG's query log: a round's whole texts must stay out of it
    reset_queries()
    with connection.execute_wrapper(capture):
        store.append_many(batches)
    logged = sum(len(query["sql"]) for query in connection.queries)
    connection.force_debug_cursor = False
    out = {"statements": statements, "built": list(built), "rows": {}, "logged": logged}
    for run in Run.objects.filter(pk__in=[r.pk for r in runs] + [bystander.pk]):
        out["rows"][str(run.pk)] = [run.event_count, run.heartbeat_at == beat, run.output_text, run.response_id,
                                    run.last_upstream_seq]
    out["order"] = [r.pk for r in runs] + [bystander.pk]
    try:
        store.append_many([(runs[1].pk, [], {"event_count": 2, "response_id": "r" * 201})])
        out["too_long"] = "stored"
    except DataError:
        out["too_long"] = "refused"
    out["after_refusal"] = Run.objects.get(pk=runs[1].pk).response_id
    print("RESULT " + json.dumps(out))
""")


def test_a_rounds_run_rows_go_in_a_few_statements_with_every_value_as_written(tmp_path):
    result = script_on_new_deployment(tmp_path, SCRIPT)
    # 21 runs: one statement of 16 rows and one of 16 padded (chunk_sizes), not one UPDATE per run
    # (through Django's cursor, where the debug log would see them: none).
    assert result["statements"] == [] and result["built"] == [16, 16]
    rows = [result["rows"][str(pk)] for pk in result["order"]]
    assert rows[0] == [99, True, "later", "resp_later", 5]
    assert rows[1] == [2, True, "y" * 100_000, "resp_1", None]
    for i in range(2, 21):
        assert rows[i] == [i + 1, True, f"text {i} \u00e9\U0001f389", f"resp_{i}", None if i % 2 else i]
    assert result["logged"] < 10_000  # DEBUG's query log holds no round's texts
    assert rows[21] == [7, False, "untouched", "", None]  # no padding row touched another run
    assert result["too_long"] == "refused" and result["after_refusal"] == "resp_1"
