"""The embedded launcher's runs outlive the request that started them: nothing of the request's
context may be kept by, or used from, the run's task and its bookkeeping."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref

import pytest
from asgiref.sync import ThreadSensitiveContext
from channels.db import database_sync_to_async

from streams.live.control import create_run
from streams.live.launcher import AsyncioLauncher
from streams.models import Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST_VALUE: contextvars.ContextVar = contextvars.ContextVar("request_value")


class RequestLocal:
    """Something a request keeps in its context (as asgiref's Local and Django's locals do)."""


@pytest.fixture
def provider(settings):
    # Nothing is streamed here: the runs are cancelled before their first line runs.
    settings.STREAMSCOPE_SIMULATOR_URL = "http://127.0.0.1:9/sim/v1"
    settings.STREAMSCOPE_RECOVERY_INTERVAL_S = 0


async def queued_run(user) -> Run:
    return await database_sync_to_async(create_run)(user, "simulator", "sim-text", "hi", "", {})


async def ended_cancelled(run_id: int) -> Run:
    deadline = asyncio.get_running_loop().time() + 5
    while (run := await Run.objects.aget(pk=run_id)).status != RunStatus.CANCELLED:
        assert asyncio.get_running_loop().time() < deadline, f"the run was left {run.status}"
        await asyncio.sleep(0.02)
    return run


async def test_a_run_cancelled_before_it_began_is_ended_after_its_request_is_over(provider, user):
    launcher = AsyncioLauncher()
    run = await queued_run(user)
    async with ThreadSensitiveContext():  # as Django's ASGI handler wraps each request
        await launcher.launch(run.pk)
    # The request is over; the run's task has not run a line yet.
    assert await launcher.cancel(run.pk) is True
    run = await ended_cancelled(run.pk)
    assert run.finished_at is not None


async def test_a_running_run_keeps_nothing_of_the_request_that_started_it(provider, user):
    """The request's context (its locals, its thread-sensitive context) is freed when the request
    ends, not kept for the run's whole life by the run's task or its done callback."""
    launcher = AsyncioLauncher()
    run = await queued_run(user)
    held: list[weakref.ref] = []

    async def request() -> None:  # a task of its own, with a context of its own, as a request is
        value = RequestLocal()
        held.append(weakref.ref(value))
        REQUEST_VALUE.set(value)
        await launcher.launch(run.pk)

    request_task = asyncio.create_task(request())
    await request_task
    del request_task  # the finished task holds its context; a server lets go of it...
    await asyncio.sleep(0)  # ...and so does the loop's handle that woke us up with it
    task = launcher.tasks[run.pk]
    try:
        gc.collect()
        assert held[0]() is None, "the run keeps the request's context alive"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await ended_cancelled(run.pk)  # the cancel's write, on the database thread, before teardown
