"""A run's row that the round's second transaction failed to write is written with its next batch,
its first-event figures included (second review, 2026-11-30)."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from streams.live.recorder import RunRecorder
from streams.models import Run, RunStatus
from streams.pipeline import flush_clock as flushclock
from streams.pipeline.flush_clock import FlushClock
from streams.protocol.sse import SSEFrame
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


def frame(payload) -> SSEFrame:
    data = json.dumps(payload)
    return SSEFrame(event="", data=data, id=None, nbytes=len(data))


async def test_first_figures_of_a_failed_row_write_are_written_with_the_next(user, monkeypatch):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    recorder = RunRecorder(run.pk)
    real = flushclock.store.write_round
    failing = [True]

    async def write_round(batches):
        if failing[0] and all(not rows for _, rows, _ in batches):
            failing[0] = False
            return [RuntimeError("database blip")] * len(batches)
        return await real(batches)

    monkeypatch.setattr(flushclock.store, "write_round", write_round)
    clock = FlushClock()
    clock.runs.add(recorder)
    recorder.accept_frame(frame({"type": "response.created", "sequence_number": 0,
                                 "response": {"id": "resp_1", "status": "in_progress"}}), 5.0)
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 1, "delta": "a"}), 7.0)
    await clock.tick()  # the rows' write fails
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 2, "delta": "b"}), 9.0)
    await clock.tick()  # written with this batch
    row = await Run.objects.aget(pk=run.pk)
    assert row.event_count == 3 and row.response_id == "resp_1"
    assert (row.ttfc_ms, row.ttft_ms) == (5.0, 7.0), (row.ttfc_ms, row.ttft_ms)
