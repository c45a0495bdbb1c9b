"""The worker launcher and the stream worker in one process, over the in-memory channel layer.

The hand-off protocol is the same as across processes (tests/live/test_scaled_out.py proves that
part with Redis and PostgreSQL): launch message → claim in the store → local task; cancel
through the workers' group; duplicate messages start a run once.
"""

from __future__ import annotations

import asyncio

import pytest
from channels.db import database_sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.db import OperationalError

from streams.live import stoppers
from streams.live import worker as worker_module
from streams.live.control import create_run
from streams.live.executor import WORKER_NAME
from streams.live.launcher import AsyncioLauncher, get_launcher, use_launcher
from streams.live.worker import RUNS_CHANNEL, StreamWorker, WorkerLauncher
from streams.models import Run, RunStatus

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def simulator(settings, sim_server):
    settings.STREAMSCOPE_SIMULATOR_URL = sim_server
    settings.STREAMSCOPE_RECOVERY_INTERVAL_S = 0
    return sim_server


@pytest.fixture
async def worker(simulator):
    worker = StreamWorker(max_runs=4)
    await worker.start()
    try:
        yield worker
    finally:
        await worker.stop_taking()
        for task in list(worker.tasks.values()):
            task.cancel()
        await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def new_run(user, tokens: int = 20, rate: str = "0") -> Run:
    params = {"metadata": {"sim_tokens_per_s": rate, "sim_tokens": str(tokens), "sim_seed": "3"}, "background": False}
    return await database_sync_to_async(create_run)(user, "simulator", "sim-text", "hi", "", params)


async def wait_status(run_id: int, statuses: set[str], timeout: float = 15.0) -> Run:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        run = await Run.objects.aget(pk=run_id)
        if run.status in statuses:
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} stayed {run.status}, wanted {statuses}")
        await asyncio.sleep(0.05)


async def test_a_launched_run_is_claimed_and_executed_by_the_worker(worker, user):
    run = await new_run(user)
    await WorkerLauncher().launch(run.pk)
    run = await wait_status(run.pk, {RunStatus.COMPLETED})
    assert run.worker == WORKER_NAME
    assert run.event_count == await run.events.acount() > 20
    assert worker.started == 1


async def test_a_message_delivered_twice_starts_the_run_once(worker, user):
    run = await new_run(user)
    layer = worker_module.workers_layer()
    for _ in range(2):
        await layer.send(RUNS_CHANNEL, {"type": "run.launch", "run_id": run.pk, "resume": False})
    await wait_status(run.pk, {RunStatus.COMPLETED})
    await asyncio.sleep(0.2)
    assert worker.started == 1


async def test_cancelling_a_run_nobody_holds_ends_it_and_a_late_launch_is_ignored(simulator, user):
    run = await new_run(user)
    assert await WorkerLauncher().cancel(run.pk) is False
    run = await Run.objects.aget(pk=run.pk)
    assert run.status == RunStatus.CANCELLED and run.finished_at is not None
    worker = StreamWorker()
    await worker.handle_launch({"run_id": run.pk})
    assert worker.started == 0 and not worker.tasks


async def test_a_running_run_is_cancelled_through_the_workers_group(worker, user):
    run = await new_run(user, tokens=400, rate="40")
    await WorkerLauncher().launch(run.pk)
    await wait_status(run.pk, {RunStatus.STREAMING})
    assert await WorkerLauncher().cancel(run.pk) is True
    run = await wait_status(run.pk, {RunStatus.CANCELLED})
    assert run.event_count < 400


async def test_a_cancel_that_arrives_before_the_claim_is_honoured(simulator, user):
    worker = StreamWorker()
    run = await new_run(user)
    worker.handle_cancel(run.pk)
    await worker.handle_launch({"run_id": run.pk})
    run = await Run.objects.aget(pk=run.pk)
    assert run.status == RunStatus.CANCELLED and worker.started == 0


async def test_a_full_worker_leaves_new_runs_queued_until_it_has_room(simulator, user):
    worker = StreamWorker(max_runs=1)
    await worker.start()
    try:
        slow = await new_run(user, tokens=60, rate="60")
        await WorkerLauncher().launch(slow.pk)
        await wait_status(slow.pk, {RunStatus.STREAMING})
        second = await new_run(user)
        await WorkerLauncher().launch(second.pk)
        await asyncio.sleep(0.3)
        assert (await Run.objects.aget(pk=second.pk)).status == RunStatus.QUEUED
        await wait_status(slow.pk, {RunStatus.COMPLETED})
        await wait_status(second.pk, {RunStatus.COMPLETED})
    finally:
        await worker.stop_taking()


async def test_a_run_recovery_claimed_in_a_web_process_is_released_for_a_worker(worker, user):
    run = await new_run(user)
    # What streams.live.recovery does before it relaunches: claim the row for this process.
    await Run.objects.filter(pk=run.pk).aupdate(worker=WORKER_NAME)
    assert not await database_sync_to_async(worker_module.claim)(run.pk)
    await WorkerLauncher().launch(run.pk)
    await wait_status(run.pk, {RunStatus.COMPLETED})
    assert worker.started == 1


def test_short_names_select_the_backend(settings):
    settings.STREAMSCOPE_LAUNCHER = "asyncio"
    use_launcher(None)
    try:
        assert isinstance(get_launcher(), AsyncioLauncher)
        use_launcher(None)
        settings.STREAMSCOPE_LAUNCHER = "worker"
        if settings.REDIS_URL:
            assert isinstance(get_launcher(), WorkerLauncher)
        else:
            # Runs would wait forever for a worker no message can reach: say so at once.
            with pytest.raises(ImproperlyConfigured, match="set REDIS_URL"):
                get_launcher()
    finally:
        use_launcher(None)


async def test_a_claim_that_meets_a_passing_database_error_is_retried(worker, user, monkeypatch):
    run = await new_run(user)
    real_claim, failures = worker_module.claim, []

    def flaky_claim(run_id: int) -> bool:
        if len(failures) < 2:
            failures.append(run_id)
            raise OperationalError("database table is locked: streams_run")
        return real_claim(run_id)

    monkeypatch.setattr(worker_module, "claim", flaky_claim)
    monkeypatch.setattr(worker_module, "CLAIM_BACKOFF_S", 0.01)
    await WorkerLauncher().launch(run.pk)
    run = await wait_status(run.pk, {RunStatus.COMPLETED})
    assert failures == [run.pk, run.pk] and worker.started == 1


async def test_a_claim_that_keeps_failing_gives_up_and_leaves_the_run_to_recovery(simulator, user, monkeypatch):
    run = await new_run(user)

    def broken_claim(run_id: int) -> bool:
        raise OperationalError("the database is gone")

    monkeypatch.setattr(worker_module, "claim", broken_claim)
    monkeypatch.setattr(worker_module, "CLAIM_BACKOFF_S", 0.0)
    worker = StreamWorker()
    with pytest.raises(OperationalError):
        await worker.handle_launch({"run_id": run.pk})
    assert worker.started == 0
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.QUEUED


async def test_a_failed_membership_renewal_is_tried_again_and_the_worker_stays_in_its_group(monkeypatch):
    # A Redis hiccup during a renewal used to end the worker's renewal task for good: a day later
    # the layer forgot the worker, and cancels sent to the workers' group no longer reached it.
    monkeypatch.setattr(worker_module, "MEMBERSHIP_REFRESH_S", 0.05)
    monkeypatch.setattr(stoppers, "RENEW_RETRY_S", 0.05)
    worker = StreamWorker(max_runs=1)
    await worker.start()
    joined = asyncio.Event()
    calls: list[str] = []
    real_group_add = worker.layer.group_add

    async def flaky_group_add(group: str, channel: str) -> None:
        calls.append(group)
        if len(calls) == 1:
            raise ConnectionError("Redis is restarting")
        await real_group_add(group, channel)
        joined.set()

    monkeypatch.setattr(worker.layer, "group_add", flaky_group_add)
    try:
        await asyncio.wait_for(joined.wait(), 5)
        membership = next(task for task in worker._loops if task.get_name() == "streamworker-membership")
        assert not membership.done()
        assert calls[:2] == [worker_module.CONTROL_GROUP, worker_module.CONTROL_GROUP]
    finally:
        await worker.stop_taking()
