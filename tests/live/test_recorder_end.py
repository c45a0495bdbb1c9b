"""A run's end: its last events are stored and published as any batch, then its end is written on its
row in a write of its own, grouped with the ends of the runs ending at the same time (one UPDATE for
all, not one per run): 1,000 runs ending together made every run's last events wait for every end
(streams/pipeline/ends.py, docs/performance.md)."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db.models.query import QuerySet

from streams.live import recorder as recording
from streams.live.recorder import RunRecorder
from streams.models import Event, Run, RunStatus
from streams.protocol.sse import SSEFrame
from tests.support.factories import make_run
from tests.support.frames import delta, frame

pytestmark = pytest.mark.django_db(transaction=True)


def completed(seq: int, text: str) -> SSEFrame:
    response = {"id": "resp_1", "status": "completed", "usage": {"input_tokens": 3, "output_tokens": seq},
                "output": [{"type": "message", "content": [{"type": "output_text", "text": text}]}]}
    return frame({"type": "response.completed", "sequence_number": seq, "response": response}, "response.completed")


async def streamed(user, events: int = 3) -> tuple[Run, RunRecorder]:
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    recorder = RunRecorder(run.pk)
    for seq in range(events):
        recorder.accept_frame(delta(seq), float(seq))
    await recorder.flush()  # stored while streaming
    recorder.accept_frame(delta(events), float(events))  # the last events: left to the end
    recorder.accept_frame(completed(events + 1, "".join(f"w{s} " for s in range(events + 1))), events + 1.0)
    return run, recorder


async def test_the_last_events_reach_viewers_before_the_runs_end_is_written(user, monkeypatch):
    run, recorder = await streamed(user)
    published = []

    async def publish_events(run_id, first, encoded):
        row = await Run.objects.aget(pk=run_id)  # what the store holds as the batch goes out
        stored = await Event.objects.filter(run_id=run_id).acount()
        published.append((first, len(encoded), stored, row.status))

    monkeypatch.setattr(recording, "listened", lambda run_id: True)
    monkeypatch.setattr(recording, "publish_events", publish_events)
    await recorder._finish(RunStatus.COMPLETED, None)
    # The last two events were stored before they went out (5 stored), and the end had not been
    # written yet: it no longer shares their transaction.
    assert published == [(3, 2, 5, RunStatus.STREAMING)]
    row = await Run.objects.aget(pk=run.pk)
    assert (row.status, row.event_count, row.output_text) == (RunStatus.COMPLETED, 5, "w0 w1 w2 w3 ")
    assert row.usage == {"input_tokens": 3, "output_tokens": 4} and row.finished_at is not None
    assert row.metrics["events"] == 5 and row.duration_ms == row.metrics["duration_ms"]


async def test_runs_ending_together_write_their_ends_in_one_statement(user, monkeypatch):
    streams = [await streamed(user, events=2 + i % 3) for i in range(12)]
    ended_by_orm = []
    real_update = QuerySet.update

    def update(self, **fields):
        if "status" in fields:
            ended_by_orm.append(fields["status"])
        return real_update(self, **fields)

    monkeypatch.setattr(QuerySet, "update", update)
    errors = [None if i % 4 else {"message": "upstream said no", "code": "upstream_failed"} for i in range(12)]
    statuses = [RunStatus.COMPLETED if i % 4 else RunStatus.FAILED for i in range(12)]
    await asyncio.gather(*(recorder._finish(status, error)
                           for (_, recorder), status, error in zip(streams, statuses, errors)))
    assert ended_by_orm == []  # one UPDATE ... FROM (VALUES ...) for the twelve, not an ORM update each
    for i, (run, _recorder) in enumerate(streams):
        row = await Run.objects.aget(pk=run.pk)
        events = 2 + i % 3 + 2
        assert (row.status, row.error, row.event_count) == (statuses[i], errors[i], events)
        assert row.output_text == "".join(f"w{s} " for s in range(events - 1))
        assert row.usage == {"input_tokens": 3, "output_tokens": events - 1}
        assert row.metrics["events"] == events and row.finished_at is not None
        assert (row.ttfb_ms, row.duration_ms) == (row.metrics["ttfb_ms"], row.metrics["duration_ms"])
        assert row.response_id == "resp_1" and row.last_upstream_seq == events - 1
        assert await Event.objects.filter(run_id=run.pk).acount() == events


async def test_a_run_with_nothing_left_to_store_still_ends(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    recorder = RunRecorder(run.pk)
    recorder.accept_frame(delta(0), 0.0)
    await recorder.flush()
    await recorder._finish(RunStatus.FAILED, {"message": "gone", "code": "truncated_stream"})
    row = await Run.objects.aget(pk=run.pk)
    assert (row.status, row.error, row.event_count, row.output_text) == (
        RunStatus.FAILED, {"message": "gone", "code": "truncated_stream"}, 1, "w0 ")
    assert row.usage is None


async def test_an_end_that_fails_to_store_leaves_the_events_and_can_be_tried_again(user, monkeypatch):
    from streams.pipeline import ends

    run, recorder = await streamed(user)
    real = ends.end_runs
    tries = []

    def failing(items):
        tries.append(len(items))
        if len(tries) <= 2:  # the round and its run alone
            raise RuntimeError("database is down")
        return real(items)

    monkeypatch.setattr(ends, "end_runs", failing)
    with pytest.raises(RuntimeError):
        await recorder._finish(RunStatus.COMPLETED, None)
    row = await Run.objects.aget(pk=run.pk)
    assert row.status == RunStatus.STREAMING and await Event.objects.filter(run_id=run.pk).acount() == 5
    await recorder._finish(RunStatus.COMPLETED, None)  # as the gateway's end() tries again
    row = await Run.objects.aget(pk=run.pk)
    assert (row.status, row.event_count) == (RunStatus.COMPLETED, 5)
    assert await Event.objects.filter(run_id=run.pk).acount() == 5
