"""A Stop of a run no process holds tells the run's viewers its end as a run's own end does
(RunRecorder._finish): status cancelled, the metrics written on its row, the last seq of its whole
log. Before, embedded mode (launcher.mark_orphan_cancelled) published nothing, so a browser watching
the run showed it streaming until its end watch read the row, and scaled mode (worker.cancel_unclaimed,
a worker's early cancel) published the end with empty metrics, also when the run had ended already."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from django.test import AsyncClient

from dashboard import socket_watches
from dashboard.routing import websocket_urlpatterns
from streams.live import recovery
from streams.live.launcher import AsyncioLauncher
from streams.live.worker import StreamWorker, WorkerLauncher
from streams.models import Event, Run, RunStatus
from streams.pipeline.broadcast import group_name, publish_status
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)

MARKER = "marker"


def unheld_run(user, worker, status=RunStatus.STREAMING):
    """A run with four stored deltas, its row behind its log (count 1) as a dead process leaves it."""
    run = make_run(user, status=status, worker=worker)
    Event.objects.bulk_create(
        Event(run=run, seq=seq, t=10.0 * (seq + 1), type="response.output_text.delta",
              data=json.dumps({"type": "response.output_text.delta", "sequence_number": seq, "delta": f"w{seq} "}))
        for seq in range(4))
    Run.objects.filter(pk=run.pk).update(event_count=1)
    return run


async def published(run_id, action):
    """The messages the run's group on the in-memory layer got from ``action()``: read up to a marker
    published after it (a publish returns once sent, and the publisher keeps their order)."""
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(run_id), channel)
    try:
        await action()
        await publish_status(run_id, MARKER, {})
        messages = []
        while (message := await layer.receive(channel))["status"] != MARKER:
            messages.append(message)
        return messages
    finally:
        await layer.group_discard(group_name(run_id), channel)


async def end_message(run_id):
    """The status message RunRecorder._finish publishes, for the run's row as it ended."""
    row = await Run.objects.aget(pk=run_id)
    assert row.status == RunStatus.CANCELLED and row.metrics["events"] == 4 and row.metrics["duration_ms"] == 40.0
    return {"type": "run.status", "run": run_id, "status": row.status, "metrics": row.metrics, "error": row.error,
            "last_seq": row.event_count - 1}


async def test_a_viewer_of_an_orphan_is_told_its_stop_with_its_metrics(user, monkeypatch):
    """Embedded: the run's process is gone; the Stop lands on a process with a viewer of it."""
    monkeypatch.setattr(socket_watches, "STATUS_CHECK_S", 3600.0)  # the end must come as a message
    run = await sync_to_async(unheld_run)(user, "gone-host:1")
    comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/runs/{run.pk}/")
    comm.scope["user"] = user
    assert (await comm.connect())[0]
    try:
        seqs = []
        while (frame := json.loads(await comm.receive_from(timeout=5)))["type"] == "events":
            seqs.extend(event["seq"] for event in frame["events"])
        assert (seqs, frame["status"]) == ([0, 1, 2, 3], RunStatus.STREAMING)
        assert await AsyncioLauncher().cancel(run.pk) is False
        frame = json.loads(await comm.receive_from(timeout=5))
        message = await end_message(run.pk)
        assert frame == {"type": "status", "status": RunStatus.CANCELLED, "metrics": message["metrics"],
                         "error": None, "last_seq": 3}
    finally:
        await comm.disconnect()


async def test_a_run_cancelled_before_its_task_began_is_told_to_its_viewers(user):
    """Embedded: the Stop cancels the run's task before its body ran (nothing recorded the end)."""
    run = await sync_to_async(unheld_run)(user, "gone-host:1")
    launcher = AsyncioLauncher()

    async def launch_and_stop():
        await launcher.launch(run.pk, resume=True)  # recovery's take-over of the orphan
        task = launcher.tasks[run.pk]
        assert await launcher.cancel(run.pk) is True
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*launcher._bookkeeping)

    assert await published(run.pk, launch_and_stop) == [await end_message(run.pk)]


async def test_a_stop_of_an_unclaimed_run_publishes_the_metrics_it_wrote(user):
    """Scaled: no worker holds the run (a released one has stored events)."""
    run = await sync_to_async(unheld_run)(user, "")

    async def stop():
        assert await WorkerLauncher().cancel(run.pk) is False

    assert await published(run.pk, stop) == [await end_message(run.pk)]


async def test_a_worker_s_early_cancel_publishes_the_metrics_it_wrote(user):
    """Scaled: the cancel reached the worker before its launch message; the worker claims, then ends it."""
    run = await sync_to_async(unheld_run)(user, "")
    worker = StreamWorker()

    async def cancel_then_launch():
        worker.handle_cancel(run.pk)
        await worker.handle_launch({"run_id": run.pk})

    assert await published(run.pk, cancel_then_launch) == [await end_message(run.pk)]
    assert worker.started == 0


async def test_a_worker_s_run_cancelled_before_its_task_began_is_told_once(user):
    """Scaled: both the worker and its local launcher end a task cancelled before it began; one is told."""
    run = await sync_to_async(unheld_run)(user, "gone-host:1")
    worker = StreamWorker()

    async def launch_and_cancel():
        await worker.launch(run.pk, resume=True)  # recovery's take-over, in a worker
        task = worker.tasks[run.pk]
        worker.handle_cancel(run.pk)
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.gather(*worker.local._bookkeeping, *worker._side_tasks)

    assert await published(run.pk, launch_and_cancel) == [await end_message(run.pk)]


async def test_a_stop_that_ends_nothing_publishes_nothing(user):
    """An ended run stays as it ended and its viewers hear nothing; a claimed one is its worker's to end."""
    ended = await sync_to_async(make_run)(user, status=RunStatus.COMPLETED, metrics={"events": 9}, events=9)
    claimed = await sync_to_async(unheld_run)(user, "worker-host:7")
    worker = StreamWorker()

    async def stop_ended():
        assert await AsyncioLauncher().cancel(ended.pk) is False
        worker.handle_cancel(ended.pk)
        await worker.launch(ended.pk)  # recovery handed it over, and it ended meanwhile

    async def stop_claimed():
        assert await WorkerLauncher().cancel(claimed.pk) is True  # sent to the workers

    assert await published(ended.pk, stop_ended) == []
    assert await published(claimed.pk, stop_claimed) == []
    assert (await Run.objects.aget(pk=ended.pk)).status == RunStatus.COMPLETED
    assert (await Run.objects.aget(pk=claimed.pk)).status == RunStatus.STREAMING


async def stop_over_the_api(user, run):
    client = AsyncClient(raise_request_exception=False)
    await sync_to_async(client.force_login)(user)
    return await client.post(f"/api/runs/{run.pk}/cancel/", data="{}", content_type="application/json")


async def test_a_failed_publish_does_not_fail_the_stop_that_ended_the_run(user, monkeypatch):
    # A channel layer that cannot be reached (Redis down, embedded launcher): the end is written,
    # so the Stop answers as it did before it published; viewers learn the end from the row.
    run = await sync_to_async(unheld_run)(user, "gone-host:1")

    async def unreachable(group, message):
        raise ConnectionError("the channel layer is down")

    monkeypatch.setattr(get_channel_layer(), "group_send", unreachable)
    response = await stop_over_the_api(user, run)
    assert response.status_code == 202
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED


async def test_the_stop_of_an_orphan_whose_terminal_event_has_odd_text_parts_ends_it(user):
    # Upstream JSON of another shape than the SDK's (a text part that is not a string, content
    # that is not a list) must not keep the run from ending: the text its deltas gave stands.
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    terminal = {"type": "response.completed", "sequence_number": 1, "response": {
        "id": "resp_odd", "status": "completed",
        "output": [{"type": "message", "content": [{"type": "output_text", "text": 5}]},
                   {"type": "message", "content": 7}]}}
    await sync_to_async(Event.objects.bulk_create)([
        Event(run=run, seq=0, t=10.0, type="response.output_text.delta",
              data=json.dumps({"type": "response.output_text.delta", "sequence_number": 0, "delta": "hi"})),
        Event(run=run, seq=1, t=20.0, type="response.completed", data=json.dumps(terminal))])
    response = await stop_over_the_api(user, run)
    row = await Run.objects.aget(pk=run.pk)
    assert (response.status_code, row.status, row.output_text) == (202, RunStatus.CANCELLED, "hi")


async def test_a_stop_while_recovery_holds_an_orphan_is_told_once(user):
    # The sweep claimed the orphan; a Stop ends it (and tells its viewers) before the take-over
    # writes an end that the Stop's stands over: the take-over must not tell the same end again.
    run = await sync_to_async(unheld_run)(user, "gone-host:1")
    row = await Run.objects.aget(pk=run.pk)

    async def claim_stop_take_over():
        assert await sync_to_async(recovery.claim)(row)
        assert await AsyncioLauncher().cancel(run.pk) is False  # nothing here runs it: ended in the store
        await recovery.take_over(row)

    messages = await published(run.pk, claim_stop_take_over)
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED
    assert [m["status"] for m in messages] == [RunStatus.CANCELLED]


async def test_a_stop_while_recovery_ends_an_orphan_from_its_log_is_told_once(user):
    # The same when the log holds the run's end (the take-over would end it completed from it).
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(Event.objects.bulk_create)([
        Event(run=run, seq=0, t=10.0, type="response.completed", data=json.dumps({
            "type": "response.completed", "sequence_number": 0,
            "response": {"id": "resp_told_once", "status": "completed", "output": []}}))])
    row = await Run.objects.aget(pk=run.pk)

    async def claim_stop_take_over():
        assert await sync_to_async(recovery.claim)(row)
        assert await AsyncioLauncher().cancel(run.pk) is False
        await recovery.take_over(row)

    messages = await published(run.pk, claim_stop_take_over)
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.CANCELLED
    assert [m["status"] for m in messages] == [RunStatus.CANCELLED]
