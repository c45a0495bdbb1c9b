"""A live batch for a viewer that keeps up is written when it is published, without a task per
viewer per batch; anything else (a gap, a viewer behind, a queue or a handler before it, a frame
the writer declines) goes through the viewer's inbox as before, so each event still arrives once,
in order."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async

from dashboard import consumers
from streams.models import RunStatus
from streams.pipeline.viewers import local_viewers
from tests.dashboard.test_consumers import communicator, encoded, receive_seqs
from tests.support.factories import add_events, make_run

pytestmark = pytest.mark.django_db(transaction=True)


class Writer:
    """What dashboard/twisted_shim.TextFrames does under Daphne: here it records the frames."""

    def __init__(self) -> None:
        self.frames: list[str] = []
        self.accept = True

    def send(self, text: str) -> bool:
        if self.accept:
            self.frames.append(text)
        return self.accept

    def seqs(self) -> list[int]:
        frames = [json.loads(frame) for frame in self.frames]
        return [e["seq"] for frame in frames if frame["type"] == "events" for e in frame["events"]]


def batch(run_id, first, count):
    return {"type": "run.events", "run": run_id, "first": first, "events": encoded(range(first, first + count))}


async def watched(user, events):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=events)
    comm = communicator(run.pk, user)
    await comm.connect()
    await receive_seqs(comm, events - 1)
    assert json.loads(await comm.receive_from())["type"] == "status"
    [consumer] = local_viewers().runs[run.pk]
    while consumer.turn.locked():  # connect() still sends the stored flags
        await asyncio.sleep(0.01)
    consumer.text_frames = Writer()
    return run, comm, consumer


async def test_the_next_batch_is_written_at_once_without_a_task(user):
    run, comm, consumer = await watched(user, 3)
    try:
        viewers = local_viewers()
        viewers.deliver(batch(run.pk, 3, 2))
        viewers.deliver(batch(run.pk, 5, 1))
        # Written during deliver itself: no turn of the loop in between, nothing queued.
        assert consumer.text_frames.seqs() == [3, 4, 5] and not consumer.inbox and consumer.draining is None
        assert consumer.last_sent == 5
        viewers.deliver(batch(run.pk, 4, 2))  # already sent: nothing again
        assert consumer.text_frames.seqs() == [3, 4, 5] and consumer.draining is None
    finally:
        await comm.disconnect()


async def test_a_gap_goes_through_the_inbox_and_is_refilled_from_the_store(user):
    run, comm, consumer = await watched(user, 3)
    try:
        await sync_to_async(add_events)(run, range(3, 8))
        local_viewers().deliver(batch(run.pk, 6, 2))  # 3..5 never published here
        assert consumer.text_frames.frames == [] and len(consumer.inbox) == 1
        await consumer.draining
        assert consumer.text_frames.seqs() == [3, 4, 5, 6, 7] and consumer.last_sent == 7
    finally:
        await comm.disconnect()


async def test_a_declined_frame_and_a_busy_viewer_go_the_usual_way_in_order(user):
    run, comm, consumer = await watched(user, 1)
    try:
        viewers = local_viewers()
        consumer.text_frames.accept = False  # e.g. autobahn holds queued data
        viewers.deliver(batch(run.pk, 1, 2))
        assert len(consumer.inbox) == 1
        consumer.text_frames.accept = True
        viewers.deliver(batch(run.pk, 3, 1))  # behind a queued batch: queued too, never ahead of it
        assert len(consumer.inbox) == 2 and consumer.text_frames.frames == []
        await consumer.draining
        assert consumer.last_sent == 3
        async with consumer.turn:  # a handler Channels dispatched is running: wait for it
            viewers.deliver(batch(run.pk, 4, 1))
            assert len(consumer.inbox) == 1
        await consumer.draining
        consumer.behind = True  # a slow viewer catches up from the store, not from live batches
        viewers.deliver(batch(run.pk, 5, 1))
        assert len(consumer.inbox) == 1
        assert consumer.text_frames.seqs() == [1, 2, 3, 4]  # the inbox also writes through the writer
    finally:
        await comm.disconnect()


async def test_a_batch_split_into_several_frames_goes_through_the_inbox(user, monkeypatch):
    monkeypatch.setattr(consumers, "FRAME_MAX_CHARS", 10)
    run, comm, consumer = await watched(user, 1)
    try:
        local_viewers().deliver(batch(run.pk, 1, 3))
        assert len(consumer.inbox) == 1
        await consumer.draining
        assert consumer.text_frames.seqs() == [1, 2, 3] and len(consumer.text_frames.frames) == 3
    finally:
        await comm.disconnect()


def test_a_batch_is_split_into_frames_only_past_the_limit(monkeypatch):
    monkeypatch.setattr(consumers, "FRAME_MAX_CHARS", 20)
    # Events of 4 characters: each counts 5 with its comma, so four fill the limit exactly.
    events = ['"ab"', '"cd"', '"ef"', '"gh"']
    assert consumers._frames(events) == ['{"type":"events","events":["ab","cd","ef","gh"]}']
    assert consumers._frames([*events, '"i"']) == ['{"type":"events","events":["ab","cd","ef","gh"]}',
                                                   '{"type":"events","events":["i"]}']
    assert consumers._frames(['"' + "x" * 30 + '"']) == ['{"type":"events","events":["' + "x" * 30 + '"]}']
    assert consumers._frames([]) == ['{"type":"events","events":[]}']


def test_the_viewers_of_a_batch_share_its_frames_and_a_new_batch_gets_its_own():
    first = ['{"seq":0}', '{"seq":1}']
    frames = consumers._live_frames(first)
    assert consumers._live_frames(first) is frames
    same_text = list(first)  # another batch (another message) with the same text: built again, equal
    assert consumers._live_frames(same_text) == frames and consumers._live_frames(same_text) is not frames
    assert consumers._live_frames(['{"seq":2}']) == ['{"type":"events","events":[{"seq":2}]}']
