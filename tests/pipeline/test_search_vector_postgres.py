"""On PostgreSQL a live run's stored search vector is its input alone, so its rewrites every second
(counts) and every five (text) neither recompute a vector of its whole output nor put every word of it
into the GIN index again; its output is searchable once it has ended (migration 0013). New large
event payloads and texts are compressed with lz4 where the server has it."""

from __future__ import annotations

import textwrap

from tests.support.scaled import scaled_out_marks, script_on_new_deployment

pytestmark = scaled_out_marks()

SCRIPT = textwrap.dedent("""
    import json
    from django.contrib.auth.models import User
    from django.db import connection
    from streams.history.fleet import search
    from streams.models import Event, Run, RunStatus
    from streams.pipeline import store

    owner = User.objects.get(username="alice")
    run = Run.objects.create(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING,
                             request={"model": "m", "input": "zebra crossing"})
    found = lambda word: list(search(Run.objects.all(), word).values_list("pk", flat=True)) == [run.pk]
    store.update_runs([(run.pk, {"event_count": 40, "output_text": "giraffe " * 2000})])  # a flush's row
    live = [found("zebra"), found("giraffe")]
    store.update_runs([(run.pk, {"event_count": 41})])
    live_vector = Run.objects.extra(select={"v": "length(search_vector)"}).values_list("v", flat=True).get(pk=run.pk)
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED)  # its end
    ended = [found("zebra"), found("giraffe")]
    Run.objects.filter(pk=run.pk).update(status=RunStatus.INTERRUPTED, output_text="okapi")
    interrupted = [found("okapi"), found("giraffe")]

    store.append_events(run.pk, [(run.pk, 0, 0.5, "response.completed", json.dumps({"text": "word " * 4000}))])
    with connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        has_lz4 = cursor.fetchone()[0]
        cursor.execute("SELECT pg_column_compression(data) FROM streams_event WHERE run_id = %s", [run.pk])
        event = cursor.fetchone()[0]
        Run.objects.filter(pk=run.pk).update(output_text="okapi " * 2000)
        cursor.execute("SELECT pg_column_compression(output_text) FROM streams_run WHERE id = %s", [run.pk])
        text = cursor.fetchone()[0]
    print("RESULT " + json.dumps({"live": live, "live_vector": live_vector, "ended": ended,
                                  "interrupted": interrupted, "has_lz4": has_lz4, "event": event, "text": text}))
""")


def test_a_live_runs_vector_is_its_input_and_its_output_joins_at_its_end(tmp_path):
    result = script_on_new_deployment(tmp_path, SCRIPT)
    assert result["live"] == [True, False]  # found by its input; not by its output while it streams
    assert result["live_vector"] == 2  # "zebra", "cross": no word of its output
    assert result["ended"] == [True, True]
    assert result["interrupted"] == [True, False]  # the vector follows the text once ended
    if result["has_lz4"]:
        assert (result["event"], result["text"]) == ("lz4", "lz4")
