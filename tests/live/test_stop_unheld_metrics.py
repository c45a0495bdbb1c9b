"""A Stop of a run no process holds (launcher.mark_orphan_cancelled: its process is gone;
worker.cancel_unclaimed: no worker claimed it yet) ends it as recovery ends a run from its stored
events: its text, usage, metrics and the indexed metric columns, cancelled. Before, only the status,
the end time and the text were written: such a run had no metrics, and the runs list could not sort
or filter it by them."""

import json

import pytest

from streams.live.launcher import mark_orphan_cancelled
from streams.live.worker import cancel_unclaimed
from streams.models import Event, Run, RunStatus
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db

ENDS = {"process gone": (mark_orphan_cancelled, "gone-host:1"), "never claimed": (cancel_unclaimed, "")}
USAGE = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}


def unheld_run(user, worker, events, **row):
    """A streaming run with ``events`` stored ((t, type, payload)), its row behind its log (count 1)."""
    run = make_run(user, status=RunStatus.STREAMING, worker=worker, **row)
    Event.objects.bulk_create(Event(run=run, seq=seq, t=t, type=event_type, data=json.dumps(payload))
                              for seq, (t, event_type, payload) in enumerate(events))
    Run.objects.filter(pk=run.pk).update(event_count=min(len(events), 1))
    return run


def delta(seq, text):
    return {"type": "response.output_text.delta", "sequence_number": seq, "delta": text}


def stop(end, run):
    result = end(run.pk)
    if end is cancel_unclaimed:
        assert result is not None  # ended here: WorkerLauncher.cancel publishes the end itself
    return Run.objects.get(pk=run.pk)


@pytest.fixture(params=list(ENDS), ids=list(ENDS))
def end_and_worker(request):
    return ENDS[request.param]


def test_a_stopped_unheld_run_gets_its_metrics_and_columns_from_its_stored_events(user, end_and_worker):
    end, worker = end_and_worker
    run = unheld_run(user, worker, [
        (10.0, "response.created", {"type": "response.created", "sequence_number": 0,
                                    "response": {"id": "resp_a", "status": "in_progress"}}),
        (20.0, "response.output_text.delta", delta(1, "w1 ")),
        (30.0, "response.output_text.delta", delta(2, "w2 ")),
        (40.0, "response.output_text.delta", delta(3, "w3 ")),
    ], ttfb_ms=4.5)  # the live recorder's first byte (before the first whole event): it stands
    stopped = stop(end, run)
    assert (stopped.status, stopped.output_text, stopped.usage, stopped.error) == (
        RunStatus.CANCELLED, "w1 w2 w3 ", None, None)
    assert stopped.finished_at is not None and stopped.event_count == 4
    metrics = stopped.metrics
    assert metrics["events"] == 4
    assert metrics["counts"] == {"response.created": 1, "response.output_text.delta": 3}
    firsts = (metrics["ttfb_ms"], metrics["ttfc_ms"], metrics["ttft_ms"], metrics["duration_ms"])
    assert firsts == (4.5, 10.0, 20.0, 40.0)
    assert (metrics["output_tokens"], metrics["output_tokens_estimated"], metrics["tokens_per_s"]) == (3, True, 150.0)
    columns = (stopped.ttfb_ms, stopped.ttfc_ms, stopped.ttft_ms, stopped.duration_ms, stopped.tokens_per_s,
               stopped.gap_p95_ms)
    assert columns == (4.5, 10.0, 20.0, 40.0, 150.0, 10.0)


def test_a_stopped_run_whose_log_holds_its_end_keeps_its_usage_and_text_and_stays_cancelled(user, end_and_worker):
    """Recovery would end this run completed from its log; the user stopped it: cancelled, with the
    text and usage the terminal event gives."""
    end, worker = end_and_worker
    response = {"id": "resp_b", "status": "completed", "usage": USAGE,
                "output": [{"type": "message", "content": [{"type": "output_text", "text": "Hello"}]}]}
    run = unheld_run(user, worker, [
        (10.0, "response.output_text.delta", delta(0, "Hel")),
        (20.0, "response.output_text.delta", delta(1, "lo")),
        (25.0, "response.completed", {"type": "response.completed", "sequence_number": 2, "response": response}),
    ])
    stopped = stop(end, run)
    assert (stopped.status, stopped.output_text, stopped.usage) == (RunStatus.CANCELLED, "Hello", USAGE)
    metrics = stopped.metrics
    assert (metrics["events"], metrics["output_tokens"], metrics["output_tokens_estimated"]) == (3, 2, False)
    assert (stopped.ttft_ms, stopped.duration_ms, stopped.tokens_per_s) == (10.0, 25.0, 200.0)


def test_a_stopped_run_with_no_stored_events_gets_the_metrics_of_nothing(user, end_and_worker):
    end, worker = end_and_worker
    run = unheld_run(user, worker, [])
    stopped = stop(end, run)
    assert (stopped.status, stopped.output_text, stopped.usage) == (RunStatus.CANCELLED, "", None)
    assert (stopped.metrics["events"], stopped.metrics["counts"], stopped.metrics["duration_ms"]) == (0, {}, None)
    assert (stopped.ttfb_ms, stopped.ttft_ms, stopped.duration_ms, stopped.tokens_per_s) == (None, None, None, None)
    assert stopped.finished_at is not None


def test_a_claimed_or_ended_run_is_left_as_it_is(user):
    """The guards stand: cancel_unclaimed leaves a run a worker claimed, both leave an ended run."""
    claimed = unheld_run(user, "worker-host:7", [(10.0, "response.output_text.delta", delta(0, "x"))])
    assert cancel_unclaimed(claimed.pk) is None
    ended = make_run(user, status=RunStatus.COMPLETED, metrics={"events": 9}, output_text="done")
    mark_orphan_cancelled(ended.pk)
    assert cancel_unclaimed(ended.pk) is None
    assert Run.objects.get(pk=claimed.pk).status == RunStatus.STREAMING
    kept = Run.objects.get(pk=ended.pk)
    assert (kept.status, kept.metrics, kept.output_text) == (RunStatus.COMPLETED, {"events": 9}, "done")
