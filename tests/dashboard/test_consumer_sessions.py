"""A viewer's socket costs its connection's task and no channel of its own: its session, not each
socket, joins the session's group in this process, and a logout sent there closes every socket of
that session (and only those), as the periodic re-check does."""

from __future__ import annotations

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.db import DatabaseSyncToAsync
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator

from dashboard import consumers
from dashboard.asgi import application
from dashboard.auth import session_group
from streams.models import RunFlag, RunStatus
from streams.pipeline.viewers import local_viewers
from tests.dashboard.test_websocket_refusals import _close_code, _open, _session_cookie
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


def _members(group: str) -> set[str]:
    return set(get_channel_layer().groups.get(group, {}))


async def test_sockets_of_a_session_share_one_membership_and_cost_no_task_each(user):
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1) for _ in range(4)]
    cookie, key = await _session_cookie(user)
    sockets = [await _open(runs[0].pk, cookie)]
    try:
        await asyncio.sleep(0.1)
        with_one = len(asyncio.all_tasks())
        sockets += [await _open(run.pk, cookie) for run in runs[1:]]
        await asyncio.sleep(0.1)
        # Each further socket is its connection's task (the test's communicator runs the app in one):
        # no channel-layer receive or dispatch tasks, no watchdog.
        assert len(asyncio.all_tasks()) - with_one == 3
        assert len(_members(session_group(key))) == 1  # the session, once, for its four sockets
        receiving = [channel for channel in get_channel_layer().channels if channel.startswith("specific.")]
        assert len(receiving) == 1  # the session's, not one per socket
    finally:
        for comm in sockets:
            await comm.disconnect()
    await asyncio.sleep(0.1)
    assert _members(session_group(key)) == set()  # the last socket gone, the session left its group
    assert not consumers.session_watch().listeners


async def test_a_logout_closes_each_socket_of_that_session_only(user, django_user_model):
    rita = await sync_to_async(django_user_model.objects.create_user)("rita", password="rita-pass-123")
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)
    cookie, key = await _session_cookie(user)
    other_tab, _ = await _session_cookie(user)
    mine = [await _open(run.pk, cookie), await _open(run.pk, cookie)]
    theirs = await _open(run.pk, other_tab)
    hers = await _open((await sync_to_async(make_run)(rita, events=1)).pk, (await _session_cookie(rita))[0])
    try:
        # What dashboard/auth.py sends on logout.
        await get_channel_layer().group_send(session_group(key), {"type": "session.ended"})
        for comm in mine:
            assert await _close_code(comm) == consumers.CLOSE_UNAUTHENTICATED
        for comm in (theirs, hers):
            await comm.send_to(text_data="ping")
            assert json.loads(await comm.receive_from(timeout=5)) == {"type": "pong"}
    finally:
        for comm in (*mine, theirs, hers):
            await comm.disconnect()


async def test_a_viewer_keeps_no_task_once_its_inbox_is_worked_through(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)
    cookie, key = await _session_cookie(user)
    comm = await _open(run.pk, cookie)
    try:
        [consumer] = consumers.session_watch().sessions[(key, user.pk)]
        local_viewers(get_channel_layer()).deliver({"type": "run.flag", "run": run.pk, "flag": {"rule": "r"}})
        assert json.loads(await comm.receive_from(timeout=5)) == {"type": "flag", "flag": {"rule": "r"}}
        await asyncio.sleep(0)
        assert consumer.draining is None and not consumer.inbox
    finally:
        await comm.disconnect()


async def test_a_viewers_opening_is_one_database_hop_of_its_own(user, monkeypatch):
    # Every hop waits its turn on the one database thread, behind the runs' writes: the access
    # check and the opening (the run's row, the backlog's first page, the flags) are read in one.
    run = await sync_to_async(make_run)(user, status=RunStatus.COMPLETED, events=3)
    await RunFlag.objects.acreate(run=run, seq=1, rule_name="r", scope="output", matched_text="w1")
    cookie, _ = await _session_cookie(user)
    hops = []
    real_call = DatabaseSyncToAsync.__call__

    async def counted(self, *args, **kwargs):
        hops.append(getattr(self.func, "__name__", "?"))
        return await real_call(self, *args, **kwargs)

    monkeypatch.setattr(DatabaseSyncToAsync, "__call__", counted)
    comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
        (b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)])
    try:
        assert (await comm.connect(timeout=5))[0]
        frames = [json.loads(await comm.receive_from(timeout=5)) for _ in range(3)]
        assert [event["seq"] for event in frames[0]["events"]] == [0, 1, 2]
        assert frames[1]["type"] == "status" and frames[1]["status"] == "completed" and frames[1]["last_seq"] == 2
        assert frames[2]["type"] == "flag" and frames[2]["flag"]["matched_text"] == "w1"
        assert "_opening" in hops and len(hops) == 2  # and the user's (AuthMiddleware)
    finally:
        await comm.disconnect()
