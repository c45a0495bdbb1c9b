"""A viewer leaves the process's registry however its connection ends, even when connect() fails
after it joined (a database error, the socket closing under the backlog): a registered viewer
would keep its run's group joined and be offered every batch for the life of the process."""

from __future__ import annotations

import contextlib

import pytest
from asgiref.sync import sync_to_async

from dashboard import consumers
from streams.models import RunStatus
from streams.pipeline.viewers import local_viewers
from tests.dashboard.test_consumers import communicator
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


async def test_a_viewer_whose_connect_fails_after_joining_leaves_the_registry(user, monkeypatch):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)

    def failing(*_args, **_kwargs):
        raise RuntimeError("the database went away while the backlog was read")

    monkeypatch.setattr(consumers, "_events_after", consumers.database_sync_to_async(failing))
    socket = communicator(run.pk, user)
    with contextlib.suppress(Exception):
        await socket.connect()
    with contextlib.suppress(Exception):
        await socket.disconnect()
    assert run.pk not in local_viewers().runs


async def test_a_viewer_that_disconnects_leaves_the_registry(user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=1)
    socket = communicator(run.pk, user)
    connected, _ = await socket.connect()
    assert connected and run.pk in local_viewers().runs
    await socket.disconnect()
    assert run.pk not in local_viewers().runs
