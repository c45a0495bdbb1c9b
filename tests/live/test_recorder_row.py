"""A live run's row: its counts about once a second, its output text (which SQLite re-indexes for
search each time) every TEXT_EVERY_S and at the end; a run that ends without its recorder
(interrupted) gets its whole text from its stored events."""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async

from streams.live import recorder as recording
from streams.live.recorder import RunRecorder
from streams.live.recovery import mark_interrupted
from streams.models import Event, Run, RunStatus
from streams.protocol.sse import SSEFrame
from tests.support.factories import make_run
from tests.support.frames import delta, frame

pytestmark = pytest.mark.django_db(transaction=True)


def created(seq: int) -> SSEFrame:
    return frame({"type": "response.created", "sequence_number": seq,
                  "response": {"id": "resp_1", "status": "in_progress"}}, "response.created")


async def streaming_recorder(user, monkeypatch) -> tuple[Run, RunRecorder, list[float]]:
    """A streaming run, its recorder, and the clock its row writes go by (``clock[0]``, seconds)."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    clock = [1000.0]
    monkeypatch.setattr(recording.time, "monotonic", lambda: clock[0])
    return run, RunRecorder(run.pk), clock


async def test_the_text_is_rewritten_every_few_seconds_the_counts_every_second(user, monkeypatch):
    run, recorder, clock = await streaming_recorder(user, monkeypatch)

    async def flush_at(seconds: float, seq: int) -> Run:
        clock[0] = 1000.0 + seconds
        recorder.accept_frame(delta(seq), seconds * 1000)
        await recorder.flush()
        return await Run.objects.aget(pk=run.pk)

    assert (row := await flush_at(0, 0)).output_text == "w0 " and row.event_count == 1  # the first flush: all
    row = await flush_at(1.5, 1)
    assert row.event_count == 2 and row.output_text == "w0 "  # the counts, not the text
    row = await flush_at(2.0, 2)
    assert row.event_count == 2  # nothing within the second
    row = await flush_at(recording.TEXT_EVERY_S + 0.1, 3)
    assert row.event_count == 4 and row.output_text == "w0 w1 w2 w3 "
    recorder.accept_frame(delta(4), 7000.0)
    await recorder._finish(RunStatus.COMPLETED, None)
    row = await Run.objects.aget(pk=run.pk)
    assert row.output_text == "w0 w1 w2 w3 w4 " and row.status == RunStatus.COMPLETED


async def test_an_interrupted_run_gets_the_whole_text_of_its_stored_events(user):
    from streams.live.executor import WORKER_NAME

    # Claimed by this process, as recovery claims a run before it marks it interrupted.
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=3, output_text="w0 ",
                                        worker=WORKER_NAME)
    await Event.objects.acreate(run=run, seq=3, t=3.0, type="chat.completion.chunk",
                                data=json.dumps({"choices": [{"index": 0, "delta": {"content": "chat\x00"}}]}))
    await Event.objects.acreate(run=run, seq=4, t=4.0, type="streamscope.malformed", data='{"raw": "x"}')
    await sync_to_async(mark_interrupted)(run)
    row = await Run.objects.aget(pk=run.pk)
    assert row.status == RunStatus.INTERRUPTED and row.output_text == "w0 w1 w2 chat\ufffd"


async def test_the_text_is_held_as_one_string_once_written(user, monkeypatch):
    # A run keeps its output text for its whole life: as one string after each rewrite, not as a
    # string per delta (~50 bytes of object each for a few characters of text).
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    recorder = RunRecorder(run.pk)
    clock = [1000.0]
    monkeypatch.setattr(recording.time, "monotonic", lambda: clock[0])
    for seq in range(200):
        recorder.accept_frame(delta(seq), float(seq))
    clock[0] += recording.TEXT_EVERY_S + 0.1
    await recorder.flush()
    expected = "".join(f"w{seq} " for seq in range(200))
    assert recorder.text_parts == [expected]
    assert (await Run.objects.aget(pk=run.pk)).output_text == expected
    recorder.accept_frame(delta(200), 201.0)
    await recorder._finish(RunStatus.COMPLETED, None)
    assert (await Run.objects.aget(pk=run.pk)).output_text == expected + "w200 "


async def test_a_streaming_runs_first_event_figures_reach_its_row_with_its_counts(user, monkeypatch):
    # The runs list and its live wall show a run's first byte and first token while it streams.
    run, recorder, clock = await streaming_recorder(user, monkeypatch)
    recorder.accept_frame(created(0), 212.34)
    await recorder.flush()
    row = await Run.objects.aget(pk=run.pk)
    assert (row.ttfb_ms, row.ttfc_ms, row.ttft_ms) == (212.3, 212.3, None)
    clock[0] = 1001.5
    recorder.accept_frame(delta(1), 480.06)
    recorder.accept_frame(delta(2), 900.0)
    await recorder.flush()
    row = await Run.objects.aget(pk=run.pk)
    assert (row.status, row.ttfb_ms, row.ttft_ms, row.duration_ms) == (RunStatus.STREAMING, 212.3, 480.1, None)
    await recorder._finish(RunStatus.COMPLETED, None)
    row = await Run.objects.aget(pk=run.pk)
    assert (row.ttfb_ms, row.ttft_ms) == (212.3, 480.1) and row.metrics["ttft_ms"] == 480.1
