"""The run websocket: backlog then live, exactly once and in order; strangers refused."""

import json

import pytest
from asgiref.sync import sync_to_async
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import AnonymousUser

from dashboard import consumers
from dashboard.routing import websocket_urlpatterns
from streams.models import RunStatus
from streams.pipeline.broadcast import publish_events, publish_status
from streams.protocol.records import encode_record
from tests.support.factories import add_events, make_run

pytestmark = pytest.mark.django_db(transaction=True)


def communicator(run_id, user, after=None):
    path = f"/ws/runs/{run_id}/" + (f"?after={after}" if after is not None else "")
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), path)
    comm.scope["user"] = user
    return comm


async def receive_seqs(comm, until_seq, timeout=3, records=None):
    seqs, statuses = [], []
    while not seqs or seqs[-1] < until_seq:
        frame = json.loads(await comm.receive_from(timeout=timeout))
        if frame["type"] == "events":
            seqs.extend(e["seq"] for e in frame["events"])
            if records is not None:
                records.extend(frame["events"])
        else:
            statuses.append(frame)
    return seqs, statuses


def encoded(seqs):
    return [encode_record(s, float(s), "response.output_text.delta", json.dumps({"delta": f"w{s}"})) for s in seqs]


async def test_finished_run_sends_backlog_then_final_status(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.COMPLETED, events=2500)
    comm = communicator(run.pk, user)
    connected, _ = await comm.connect()
    assert connected
    try:
        records = []
        seqs, _ = await receive_seqs(comm, 2499, records=records)
        assert seqs == list(range(2500))
        assert records[0] == {"seq": 0, "t": 0.0, "type": "response.output_text.delta",
                              "data": {"type": "response.output_text.delta", "delta": "w0 ", "sequence_number": 0}}
        status = json.loads(await comm.receive_from())
        assert status["type"] == "status" and status["status"] == "completed"
    finally:
        await comm.disconnect()


async def test_after_skips_what_the_client_has(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.COMPLETED, events=10)
    comm = communicator(run.pk, user, after=6)
    await comm.connect()
    try:
        seqs, _ = await receive_seqs(comm, 9)
        assert seqs == [7, 8, 9]
    finally:
        await comm.disconnect()


async def test_live_batches_overlapping_the_backlog_are_not_doubled(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=5)
    comm = communicator(run.pk, user)
    await comm.connect()
    try:
        seqs, _ = await receive_seqs(comm, 4)
        assert seqs == [0, 1, 2, 3, 4]
        # A batch the client partly has already (published while the backlog was read).
        await sync_to_async(add_events)(run, range(5, 8))
        await publish_events(run.pk, 3, encoded(range(3, 8)))
        more, _ = await receive_seqs(comm, 7)
        assert more == [5, 6, 7]
    finally:
        await comm.disconnect()


async def test_a_missing_batch_is_refilled_from_the_store(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=3)
    comm = communicator(run.pk, user)
    await comm.connect()
    try:
        await receive_seqs(comm, 2)
        # Events 3..5 were stored, but their message was dropped by the layer.
        await sync_to_async(add_events)(run, range(3, 9))
        await publish_events(run.pk, 6, encoded(range(6, 9)))
        seqs, _ = await receive_seqs(comm, 8)
        assert seqs == [3, 4, 5, 6, 7, 8]
        await publish_status(run.pk, "completed", {"events": 9}, None, last_seq=8)
        status = json.loads(await comm.receive_from())
        assert status == {"type": "status", "status": "completed", "metrics": {"events": 9}, "error": None,
                          "last_seq": 8}
    finally:
        await comm.disconnect()


async def test_strangers_and_anonymous_visitors_are_refused(user, other_user):
    run = await sync_to_async(make_run)(user, events=1)
    # Accepted, then closed with the reason (4401/4403), so that a browser sees the code.
    for who, reason in ((other_user, 4403), (AnonymousUser(), 4401), (user, None)):
        comm = communicator(run.pk + 999 if reason is None else run.pk, who)
        connected, _ = await comm.connect()
        assert connected
        assert await comm.receive_output() == {"type": "websocket.close", "code": reason or 4403}


async def test_staff_may_watch_anyones_run(user, staff_user):
    run = await sync_to_async(make_run)(user, events=1)
    comm = communicator(run.pk, staff_user)
    connected, _ = await comm.connect()
    assert connected
    await comm.disconnect()


async def test_a_live_batch_reaches_the_viewer_while_the_database_thread_is_busy(user):
    """Live batches need no database: they must not wait behind the runs' writes, which hold the
    one thread database work runs on (Channels' default dispatch hops there for every message)."""
    import asyncio
    import threading

    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=3)
    comm = communicator(run.pk, user)
    await comm.connect()
    release = threading.Event()
    busy = None
    try:
        seqs, _ = await receive_seqs(comm, 2)
        await asyncio.sleep(0.3)  # connect() ends with queries of its own (the run's status, its flags)
        busy = asyncio.ensure_future(sync_to_async(release.wait)(10))  # what a long group commit looks like
        await asyncio.sleep(0.05)
        await publish_events(run.pk, 3, encoded([3, 4]))
        seqs, _ = await receive_seqs(comm, 4, timeout=5)
        assert seqs == [3, 4] and not busy.done()
    finally:
        release.set()
        if busy is not None:
            await busy
        await comm.disconnect()


async def test_expired_messages_are_still_swept_but_not_on_every_receive(monkeypatch):
    from streams.pipeline import memory_layer

    layer = memory_layer.BatchInMemoryChannelLayer(expiry=0.05)
    sweeps = []
    real = memory_layer.InMemoryChannelLayer._clean_expired
    monkeypatch.setattr(memory_layer.InMemoryChannelLayer, "_clean_expired",
                        lambda self: (sweeps.append(1), real(self)))
    await layer.send("stale.inmemory!a", {"type": "x"})
    await layer.send("live.inmemory!b", {"type": "y"})
    for _ in range(5):
        await layer.send("live.inmemory!b", {"type": "y"})
        await layer.receive("live.inmemory!b")
    assert len(sweeps) == 1
    import asyncio

    await asyncio.sleep(0.06)
    layer._last_clean -= memory_layer.CLEAN_EVERY_S
    await layer.send("live.inmemory!b", {"type": "y"})
    await layer.receive("live.inmemory!b")
    assert len(sweeps) == 2 and "stale.inmemory!a" not in layer.channels


async def test_a_viewer_that_cannot_keep_up_drops_batches_and_still_gets_each_event_once(user):
    """Batches offered faster than the viewer's turn comes (more than its inbox holds) are dropped
    like a full channel's; the next batch or the final status refills the gap from the store."""
    from streams.pipeline.viewers import local_viewers

    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)
    comm = communicator(run.pk, user)
    await comm.connect()
    try:
        await receive_seqs(comm, 0)
        await sync_to_async(add_events)(run, range(1, 301))
        viewers = local_viewers()
        for seq in range(1, 301):  # all at once, without a turn of the loop in between
            viewers.deliver({"type": "run.events", "run": run.pk, "first": seq, "events": encoded([seq])})
        [consumer] = viewers.runs[run.pk]
        assert len(consumer.inbox) == consumers.INBOX_MAX
        await publish_status(run.pk, "completed", {"events": 301}, None, last_seq=300)
        seqs, statuses = await receive_seqs(comm, 300)
        assert seqs == list(range(1, 301))
        while not any(status["status"] == "completed" for status in statuses):
            statuses.append(json.loads(await comm.receive_from()))
    finally:
        await comm.disconnect()
    assert run.pk not in local_viewers().runs  # left the registry with the socket
