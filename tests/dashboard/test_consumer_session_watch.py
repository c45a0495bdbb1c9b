"""The periodic session re-check is one database hop per session, not three queries per socket:
a session's sockets in this process are checked together, and each closes for its own reason."""

from __future__ import annotations

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from dashboard import consumers, socket_watches
from tests.dashboard.test_websocket_refusals import _close_code, _open, _session_cookie
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def counted_checks(monkeypatch):
    monkeypatch.setattr(socket_watches, "SESSION_CHECK_S", 0.2)
    calls = []
    real = socket_watches._refusals

    async def counted(session_key, user_pk, run_ids):
        calls.append(set(run_ids))
        return await real(session_key, user_pk, run_ids)

    monkeypatch.setattr(socket_watches, "_refusals", counted)
    return calls


async def test_a_sessions_sockets_are_checked_together(user, counted_checks):
    runs = [await sync_to_async(make_run)(user, events=1) for _ in range(3)]
    cookie, _ = await _session_cookie(user)
    sockets = [await _open(run.pk, cookie) for run in runs]
    try:
        await asyncio.sleep(0.7)
        assert 2 <= len(counted_checks) <= 4  # one per period for the three sockets, not three
        assert counted_checks[-1] == {run.pk for run in runs}
        for comm in sockets:
            assert await comm.receive_nothing(timeout=0.05)
    finally:
        for comm in sockets:
            await comm.disconnect()
    await asyncio.sleep(0.3)
    checks = len(counted_checks)
    await asyncio.sleep(0.5)
    assert len(counted_checks) == checks  # the last socket gone, nothing is checked any more


async def test_each_socket_of_a_session_closes_for_its_own_reason(user, django_user_model, counted_checks):
    rita = await sync_to_async(django_user_model.objects.create_user)("rita", password="rita-pass-123")
    group = (await Group.objects.aget_or_create(name="reviewer"))[0]
    await sync_to_async(rita.groups.add)(group)
    hers = await sync_to_async(make_run)(rita, events=1)
    theirs = await sync_to_async(make_run)(user, events=1)
    cookie, _ = await _session_cookie(rita)
    own, reviewed = await _open(hers.pk, cookie), await _open(theirs.pk, cookie)
    try:
        await sync_to_async(rita.groups.remove)(group)
        assert await _close_code(reviewed) == consumers.CLOSE_FORBIDDEN
        await asyncio.sleep(0.5)
        assert await own.receive_nothing(timeout=0.05)  # her own run: still hers to watch
        [watched] = consumers.session_watch().sessions.values()
        assert [socket_.run_id for socket_ in watched] == [hers.pk]  # the closed one left the watch
    finally:
        await own.disconnect()
        await reviewed.disconnect()
