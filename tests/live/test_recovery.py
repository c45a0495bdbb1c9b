"""Process faults, for real: kill -9 the process streaming a run, start another, and check that the
run is taken over within seconds — resumed when the upstream still has it, else interrupted — with
every event stored before the crash kept and no event doubled."""

import json
import os
import signal

import pytest

from tests.support.live import login, start_run, wait_for
from tests.support.live import stored_events as events
from tests.support.servers import manage, start_daphne

# The crash tests are `server` tests through their crash_setup fixture (tests/conftest.py); the orphan
# test at the end runs in process.


def crash_mid_run(app_dir, env, processes, **params):
    app, url = start_daphne(app_dir, extra_env=env)
    processes.append(app)
    client = login(url, "alice", "alice-pass-123")
    run_id = start_run(client, **params)
    wait_for(lambda: len(events(client, run_id)) >= 20, 15, "20 stored events")
    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    before = events_from_db(app_dir, run_id)
    assert len(before) >= 20
    restarted, url = start_daphne(app_dir, extra_env=env)
    processes.append(restarted)
    return login(url, "alice", "alice-pass-123"), run_id, before


def events_from_db(app_dir, run_id):
    out = manage(app_dir, "shell", "-c",
                 f"import json; from streams.models import Event, Run;"
                 f"r = Run.objects.get(pk={run_id});"
                 f"print(json.dumps([r.event_count, list(Event.objects.filter(run_id={run_id}).order_by('seq')"
                 f".values_list('seq', 'type', 'data'))]))")
    count, rows = json.loads(out.strip().splitlines()[-1])
    # The row is rewritten about once a second while the events go in with every batch, so it may
    # count fewer (recovery counts the rest); the stored events have no gap.
    assert count <= len(rows) and [row[0] for row in rows] == list(range(len(rows)))
    return rows


def test_a_killed_process_is_resumed_from_its_last_event(crash_setup):
    app_dir, env, processes = crash_setup
    client, run_id, before = crash_mid_run(app_dir, env, processes)
    run = wait_for(lambda: (r := client.get(f"/api/runs/{run_id}/").json())["status"] not in ("queued", "streaming")
                   and r,
                   30, "the run to end after the restart")
    assert run["status"] == "completed", run
    after = events(client, run_id)
    # Everything stored before the crash is still there, unchanged.
    assert [(e["seq"], e["type"], json.dumps(e["data"], separators=(",", ":"))) for e in after[: len(before)]] == \
        [(seq, typ, json.dumps(json.loads(data), separators=(",", ":"))) for seq, typ, data in before]
    assert [e["seq"] for e in after] == list(range(len(after)))
    upstream = [e["data"]["sequence_number"] for e in after if not e["type"].startswith("streamscope.")]
    assert upstream == list(range(len(upstream))), "every upstream event exactly once, in order"
    assert [e["type"] for e in after if e["type"] == "streamscope.resume"] == ["streamscope.resume"]
    final = after[-1]["data"]["response"]
    text = "".join(p["text"] for item in final["output"] if item["type"] == "message" for p in item["content"])
    assert run["output_text"] == text


def test_a_killed_process_that_cannot_resume_is_marked_interrupted(crash_setup):
    app_dir, env, processes = crash_setup
    client, run_id, before = crash_mid_run(app_dir, env, processes, background=False)
    run = wait_for(lambda: (r := client.get(f"/api/runs/{run_id}/").json())["status"] != "streaming" and r,
                   30, "the run to be marked")
    assert run["status"] == "interrupted"
    assert "could not be resumed" in run["error"]["message"]
    assert len(events(client, run_id)) == len(before)


@pytest.mark.django_db
def test_find_orphans_judges_by_process_and_heartbeat(user, settings):
    from datetime import timedelta

    from django.utils import timezone

    from streams.live.recovery import HOST, find_orphans
    from streams.models import RunStatus
    from tests.support.factories import make_run

    settings.STREAMSCOPE_STALE_AFTER_S = 10
    now = timezone.now()
    me = f"{HOST}:{os.getppid()}"  # a live process on this host (the one that started the tests)
    dead = f"{HOST}:999999999"
    elsewhere = "other-host:123"
    cases = {
        "live process, fresh beat": (me, 5, False),
        "live process, silent past 6x the limit": (me, 100, True),
        "dead process on this host": (dead, 1, True),
        "other host, fresh beat": (elsewhere, 5, False),
        "other host, stale beat": (elsewhere, 20, True),
    }
    runs = {}
    for name, (worker, age, _) in cases.items():
        runs[name] = make_run(user, status=RunStatus.STREAMING, worker=worker,
                              heartbeat_at=now - timedelta(seconds=age))
    found = {run.pk for run in find_orphans()}
    for name, (_, _, orphan) in cases.items():
        assert (runs[name].pk in found) is orphan, name


@pytest.mark.django_db
def test_the_row_of_a_dead_run_catches_up_with_its_stored_events(user):
    """The row lags the log by up to a second; recovery counts the rest before resuming or ending it."""
    from streams.live.recovery import catch_up_row
    from streams.models import Run, RunStatus
    from tests.support.factories import add_events, make_run

    run = make_run(user, status=RunStatus.STREAMING)
    add_events(run, range(6))  # sequence_number 0..5 in each event's data
    Run.objects.filter(pk=run.pk).update(event_count=2, last_upstream_seq=1)
    run.refresh_from_db()
    catch_up_row(run)
    stored = Run.objects.get(pk=run.pk)
    assert (run.event_count, run.last_upstream_seq) == (stored.event_count, stored.last_upstream_seq) == (6, 5)
    catch_up_row(run)  # nothing after the count: unchanged
    assert Run.objects.get(pk=run.pk).event_count == 6


@pytest.mark.django_db
@pytest.mark.parametrize("worker", ["gone-host:1", ""])
def test_stopping_a_run_nobody_executes_counts_its_whole_log_first(user, worker):
    """Stop on a run whose process is gone (or that nobody holds) ends it in the store; its row,
    up to a second behind the log, first counts the rest, so viewers are told the real last seq."""
    from streams.live.launcher import mark_orphan_cancelled
    from streams.live.worker import cancel_unclaimed
    from streams.models import Run, RunStatus
    from tests.support.factories import add_events, make_run

    run = make_run(user, status=RunStatus.STREAMING, worker=worker)
    add_events(run, range(6))
    Run.objects.filter(pk=run.pk).update(event_count=2, last_upstream_seq=1)
    if worker:
        mark_orphan_cancelled(run.pk)
    else:
        assert cancel_unclaimed(run.pk)
    stopped = Run.objects.get(pk=run.pk)
    assert stopped.status == RunStatus.CANCELLED
    assert (stopped.event_count, stopped.last_upstream_seq) == (6, 5)


def stored(run, rows):
    from streams.models import Event

    Event.objects.bulk_create(Event(run=run, seq=seq, t=float(seq), type=event_type, data=json.dumps(payload))
                              for seq, (event_type, payload) in enumerate(rows))


RESPONSE = {"id": "resp_log", "status": "completed", "output": []}
DELTA = ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi"})
LOGS = {
    # the log's last events -> the status recovery ends the run with, or None: interrupted
    "completed": ([("response.created", {"sequence_number": 0, "response": RESPONSE}), DELTA,
                   ("response.completed", {"sequence_number": 2, "response": RESPONSE})], "completed"),
    "failed": ([DELTA, ("response.failed", {"sequence_number": 2, "response": {
        **RESPONSE, "status": "failed", "error": {"code": "server_error", "message": "boom"}}})], "failed"),
    "error event": ([DELTA, ("error", {"sequence_number": 2, "code": "rate_limit", "message": "slow down"})], "failed"),
    "chat, cut by length": ([("chat.completion.chunk", {"choices": [{"index": 0, "delta": {"content": "hi"},
                                                                     "finish_reason": "length"}]}),
                             ("streamscope.done", {"raw": "[DONE]"})], "incomplete"),
    "no end stored": ([("response.created", {"sequence_number": 0, "response": RESPONSE}), DELTA], None),
}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("log_name", list(LOGS))
async def test_a_run_whose_process_died_after_storing_its_end_is_ended_as_its_log_says(user, monkeypatch, log_name):
    """A run's last events are stored before its end is written on its row (a write of its own):
    a process that died between the two leaves a 'streaming' row whose log says how it ended."""
    from asgiref.sync import sync_to_async

    from streams.live import recovery
    from streams.models import Run, RunStatus
    from tests.support.factories import make_run

    rows, status = LOGS[log_name]
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")  # not resumable
    await sync_to_async(stored)(run, rows)
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    ended = await Run.objects.aget(pk=run.pk)
    assert ended.status == (status or RunStatus.INTERRUPTED)
    assert ended.output_text == "hi" and ended.finished_at is not None
    if status == "failed":
        assert ended.error["message"] in ("boom", "slow down")
    elif status is None:
        assert ended.error["code"] == "interrupted"
    else:
        assert ended.error is None
    if log_name == "completed":
        assert ended.response_id == "resp_log"
