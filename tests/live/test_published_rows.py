"""A stored batch is published as its rows' encoding, and the rows are let go as it is made: runs
ending together are stored, then published, together, and each one's last events carry its whole
output text several times (the .done events, response.completed). Holding every run's rows and
their encoding at once was the peak of 1,000 runs' end (bench/many.py), left free in the heap."""

from __future__ import annotations

import gc
import weakref

import pytest
from asgiref.sync import sync_to_async

from streams.live import recorder as recording
from streams.live.recorder import RunRecorder
from streams.models import Event, RunStatus
from streams.pipeline import flush_clock as flushclock
from streams.pipeline.flush_clock import FlushClock
from streams.pipeline.viewers import local_viewers
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


class Data(str):
    """An event's data that can be watched for being freed (a str cannot)."""


class Viewer:
    def __init__(self) -> None:
        self.events: list[str] = []

    def offer(self, message: dict) -> None:
        if message["type"] == "run.events":
            self.events.extend(message["events"])


async def recorder_with_rows(user, count: int = 3) -> tuple[RunRecorder, list[weakref.ref], Viewer]:
    """A recorder whose buffer holds ``count`` rows whose data only the buffer refers to."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    recorder, viewer = RunRecorder(run.pk), Viewer()
    await local_viewers().join(run.pk, viewer)
    watched = []
    for seq in range(count):
        data = Data(f'{{"type":"response.output_text.delta","delta":"w{seq} "}}')
        watched.append(weakref.ref(data))
        recorder._add("response.output_text.delta", data, float(seq), len(data))
    del data
    return recorder, watched, viewer


def alive(watched: list[weakref.ref]) -> int:
    gc.collect()
    return sum(ref() is not None for ref in watched)


async def test_a_runs_own_flush_lets_its_rows_go_before_it_publishes_them(user, monkeypatch):
    recorder, watched, viewer = await recorder_with_rows(user)
    published = []
    real = recording.publish_events

    async def publish_events(run_id, first, encoded):
        published.append((first, len(encoded), alive(watched)))
        await real(run_id, first, encoded)

    monkeypatch.setattr(recording, "publish_events", publish_events)
    await recorder.flush()
    assert published == [(0, 3, 0)]  # stored, encoded, and no row's data left while it goes out
    assert [e.seq async for e in Event.objects.filter(run_id=recorder.run_id).order_by("seq")] == [0, 1, 2]
    assert len(viewer.events) == 3 and '"delta":"w2 "' in viewer.events[2]


async def test_a_round_lets_every_runs_rows_go_before_it_publishes_them(user, monkeypatch):
    runs = [await recorder_with_rows(user, count=2 + index) for index in range(3)]
    watched = [ref for _, refs, _ in runs for ref in refs]
    published = []
    real = flushclock.publish_round

    async def publish_round(batches):
        published.append(([(first, len(encoded)) for _, first, encoded in batches], alive(watched)))
        await real(batches)

    monkeypatch.setattr(flushclock, "publish_round", publish_round)
    clock = FlushClock()
    for recorder, _, _ in runs:
        clock.runs.add(recorder)
    await clock.tick()
    [(batches, left)] = published
    assert sorted(batches) == [(0, 2), (0, 3), (0, 4)]
    assert left == 0  # every run's rows let go as its batch was encoded, before any is published
    assert [len(viewer.events) for _, _, viewer in runs] == [2, 3, 4]
