"""A run ended without its recorder (its process gone, or never claimed) gets the output text its
stored events spell: while it streamed, its row's copy was rewritten only every TEXT_EVERY_S."""

import json

import pytest

from streams.live.launcher import mark_orphan_cancelled
from streams.live.worker import cancel_unclaimed
from streams.models import Event, Run, RunStatus
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db


def streaming_run(user):
    run = make_run(user, status=RunStatus.STREAMING)
    Event.objects.bulk_create(
        Event(run=run, seq=seq, t=float(seq), type="response.output_text.delta",
              data=json.dumps({"type": "response.output_text.delta", "sequence_number": seq, "delta": f"w{seq} "}))
        for seq in range(5))
    Run.objects.filter(pk=run.pk).update(output_text="w0 ", event_count=1)  # the row's last copy
    return run


@pytest.mark.parametrize("end", [mark_orphan_cancelled, cancel_unclaimed])
def test_an_orphan_ended_gets_the_text_of_every_stored_event(user, end):
    run = streaming_run(user)
    end(run.pk)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED
    assert (run.output_text, run.event_count) == ("w0 w1 w2 w3 w4 ", 5)
