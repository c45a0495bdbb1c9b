"""A Stop of a run nobody holds replays its log before taking the database's write lock (on SQLite,
every other run's flush waits for a transaction), and ends it with a log that grew meanwhile counted."""

import json

import pytest
from django.db import connection

from streams.live import launcher, worker
from streams.models import Event, Run, RunStatus
from tests.live.test_stop_unheld_viewers import unheld_run

pytestmark = pytest.mark.django_db(transaction=True)

STOPS = {"process gone": (launcher.mark_orphan_cancelled, "gone-host:1"),
         "never claimed": (worker.cancel_unclaimed, "")}


@pytest.mark.parametrize("stop, holder", STOPS.values(), ids=list(STOPS))
def test_the_log_is_replayed_outside_the_write_transaction(user, monkeypatch, stop, holder):
    run = unheld_run(user, holder)  # four deltas, its row behind its log
    replayed_in_a_transaction = []
    real = launcher.replay_run

    def watched(run):
        replayed_in_a_transaction.append(connection.in_atomic_block)
        return real(run)

    monkeypatch.setattr(launcher, "replay_run", watched)
    assert stop(run.pk) is not None
    assert replayed_in_a_transaction == [False]
    assert Run.objects.get(pk=run.pk).metrics["events"] == 4


@pytest.mark.parametrize("stop, holder", STOPS.values(), ids=list(STOPS))
def test_a_log_that_grew_after_the_replay_is_replayed_again_under_the_lock(user, monkeypatch, stop, holder):
    run = unheld_run(user, holder)  # four deltas, its row behind its log
    real = launcher.replay_run

    def then_one_more_stored(run):
        replay = real(run)
        if not connection.in_atomic_block:  # the first replay, before the lock: the log grows after it
            Event.objects.create(run=run, seq=4, t=50.0, type="response.output_text.delta",
                                 data=json.dumps({"type": "response.output_text.delta", "sequence_number": 4,
                                                  "delta": "w4 "}))  # as unheld_run stores its four
        return replay

    monkeypatch.setattr(launcher, "replay_run", then_one_more_stored)
    assert stop(run.pk) is not None
    ended = Run.objects.get(pk=run.pk)
    assert (ended.status, ended.event_count, ended.metrics["events"]) == (RunStatus.CANCELLED, 5, 5)
    assert ended.output_text == "w0 w1 w2 w3 w4 "
