"""A run's end that never reached its viewers (a dropped status message) is found by one sweep per
process, not a task and a query per socket: the idle sockets' runs are read in one query, and each
socket of an ended run gets what is left from the store and the final status, once."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from asgiref.sync import sync_to_async

from dashboard import consumers, socket_watches
from streams.models import Run, RunStatus
from tests.dashboard.test_websocket_refusals import _open, _session_cookie
from tests.support.factories import add_events, make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counted_sweeps(monkeypatch):
    monkeypatch.setattr(socket_watches, "STATUS_CHECK_S", 0.2)
    calls = []
    real = socket_watches._ended_runs

    async def counted(run_ids):
        calls.append(sorted(run_ids))
        return await real(run_ids)

    monkeypatch.setattr(socket_watches, "_ended_runs", counted)
    return calls


async def _until_status(comm) -> tuple[list[int], dict]:
    seqs = []
    while True:
        frame = json.loads(await comm.receive_from(timeout=5))
        if frame["type"] == "events":
            seqs.extend(event["seq"] for event in frame["events"])
        elif frame["type"] == "status":
            return seqs, frame


async def test_idle_sockets_of_several_runs_are_checked_in_one_query(user, counted_sweeps):
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=2) for _ in range(3)]
    cookie, _ = await _session_cookie(user)
    sockets = [await _open(run.pk, cookie) for run in runs]
    sockets.append(await _open(runs[0].pk, cookie))  # a second viewer of the first run
    try:
        await asyncio.sleep(0.6)  # all four quiet for a period: swept together while still streaming
        assert sorted(run.pk for run in runs) in counted_sweeps
        # The first two runs end in the store; their status messages never come.
        for run in runs[:2]:
            await sync_to_async(add_events)(run, [2, 3])
        await Run.objects.filter(pk__in=[runs[0].pk, runs[1].pk]).aupdate(status=RunStatus.COMPLETED)
        for comm in (sockets[0], sockets[1], sockets[3]):
            seqs, status = await _until_status(comm)
            assert seqs == [2, 3]
            assert status["status"] == "completed" and status["last_seq"] == 3
        assert await sockets[2].receive_nothing(timeout=0.5)  # still streaming: nothing to say
        for comm in sockets:
            assert await comm.receive_nothing(timeout=0.3)  # each end said once
        # One query per period for all idle sockets, never one per socket.
        assert all(len(set(ids)) == len(ids) for ids in counted_sweeps)  # two sockets of a run: one row
        assert counted_sweeps[-1] == [runs[2].pk]  # the ended runs' sockets are no longer watched
        # No task of its own per socket for this: four sockets, one sweeping task in all.
        assert len([t for t in asyncio.all_tasks() if t.get_name() == "ws-end-watch"]) == 1
        assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("ws-run-")]
    finally:
        for comm in sockets:
            await comm.disconnect()
    await asyncio.sleep(0.3)
    assert not consumers.end_watch().sockets
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "ws-end-watch"]  # nothing left to watch


async def test_a_socket_that_hears_its_run_does_not_cost_a_query(user, counted_sweeps):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)
    cookie, _ = await _session_cookie(user)
    comm = await _open(run.pk, cookie)
    try:
        watched = next(iter(consumers.end_watch().sockets))
        for _ in range(6):  # live batches keep coming
            watched.last_message = time.monotonic()
            await asyncio.sleep(0.1)
        assert counted_sweeps == []
    finally:
        await comm.disconnect()


async def test_a_run_end_found_by_the_sweep_and_then_published_is_said_once(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=2)
    cookie, _ = await _session_cookie(user)
    comm = await _open(run.pk, cookie)
    try:
        [watched] = consumers.end_watch().sockets
        end = {"run": run.pk, "status": "completed", "metrics": {}, "error": None, "last_seq": 1}
        watched.offer({"type": "run.check", **end})  # the sweep's stored end...
        watched.offer({"type": "run.status", **end})  # ...and the published one, late but not lost
        seqs, status = await _until_status(comm)
        assert seqs == [] and status["status"] == "completed"
        assert await comm.receive_nothing(timeout=0.3)
    finally:
        await comm.disconnect()
