"""Stream workers: processes that execute the runs web processes hand them (scaled-out mode).

The hand-off engine is Channels' own channel layer on Redis, the protocol ``runworker`` uses:
``WorkerLauncher`` sends ``{"type": "run.launch", "run_id"}`` to the general channel
:data:`RUNS_CHANNEL`, and Redis gives each message to exactly one waiting worker (BZPOPMIN). The
layer is at-most-once and may, rarely, deliver a message twice, so the ``Run`` row is the truth:
a worker *claims* the run with a compare-and-set on ``Run.worker`` before it starts it, and a run
whose message was lost is found by the recovery sweep (streams/live/recovery.py) that every process
runs. Cancels go to every worker through the group :data:`CONTROL_GROUP`; the holder stops it.
See docs/scaling.md for why this engine and not arq, taskiq or django-tasks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.utils import timezone

from streams.live.executor import WORKER_NAME
from streams.live.launcher import AsyncioLauncher, end_unheld, publish_end, write_cancelled
from streams.live.stoppers import renew_membership
from streams.models import ACTIVE_STATUSES, Run

log = logging.getLogger(__name__)

# The "workers" layer alias when configured (a Redis queue), else the default layer.
LAYER = "workers"
RUNS_CHANNEL = "streamscope.runs"
CONTROL_GROUP = "streamscope.workers"
# Group membership in channels_redis expires (a day by default); re-joining keeps it fresh.
MEMBERSHIP_REFRESH_S = 300.0
# A cancel that arrives before the run is claimed here is remembered this long.
EARLY_CANCEL_TTL_S = 120.0
FULL_POLL_S = 0.2
CLAIM_ATTEMPTS = 5
CLAIM_BACKOFF_S = 0.05


class WorkerLauncher:
    """Hands runs to stream-worker processes (``manage.py streamworker``) over the channel layer.

    A launch is one message on the general channel :data:`RUNS_CHANNEL`: Redis
    gives each message to one waiting worker, which claims the run in the database before it
    starts it (so a message delivered twice starts it once). The run row is the durable record:
    a message lost while no worker listens is picked up by the recovery sweep. A cancel goes to
    every worker through a group; the one holding the run stops it.
    """

    async def launch(self, run_id: int, resume: bool = False) -> None:
        # Recovery may have claimed the run in this (web) process: let a worker claim it instead.
        await database_sync_to_async(release_claim)(run_id)
        await send_launch(run_id, resume)

    async def cancel(self, run_id: int) -> bool:
        ended = await database_sync_to_async(cancel_unclaimed)(run_id)
        if ended is not None:
            # Nobody had it yet: it is ended in the store, and any late claim now fails.
            await publish_end(ended)
            return False
        await send_cancel(run_id)
        return True


# --- the database side of a hand-off (sync; called through database_sync_to_async) -----------

def claim(run_id: int) -> bool:
    """Take an unclaimed active run for this process; False when another process was quicker."""
    return Run.objects.filter(pk=run_id, status__in=list(ACTIVE_STATUSES), worker="").update(
        worker=WORKER_NAME, heartbeat_at=timezone.now()
    ) == 1


def release_claim(run_id: int) -> None:
    """Give back a claim this process made (recovery in a web process) so a worker can take it."""
    Run.objects.filter(pk=run_id, worker=WORKER_NAME, status__in=list(ACTIVE_STATUSES)).update(
        worker="", heartbeat_at=timezone.now()
    )


def cancel_unclaimed(run_id: int) -> Run | None:
    """End a run nobody holds yet (a released one may have stored events: counted in first);
    the run as written when it was ended here, else None."""
    return write_cancelled(Run.objects.filter(pk=run_id, status__in=list(ACTIVE_STATUSES), worker=""))


# --- messages ---------------------------------------------------------------------------------

def workers_layer() -> Any:
    return get_channel_layer(LAYER if LAYER in settings.CHANNEL_LAYERS else DEFAULT_CHANNEL_LAYER)


async def send_launch(run_id: int, resume: bool = False) -> None:
    try:
        await workers_layer().send(RUNS_CHANNEL, {"type": "run.launch", "run_id": run_id, "resume": resume})
    except ChannelFull:
        # The run row stays claimable; the recovery sweep hands it out again shortly.
        log.warning("run %s: the worker queue is full; it will be handed out by the next sweep", run_id)


async def send_cancel(run_id: int) -> None:
    await workers_layer().group_send(CONTROL_GROUP, {"type": "run.cancel", "run_id": run_id})


# --- the worker -------------------------------------------------------------------------------

class StreamWorker:
    """Takes runs from the queue while it has room, executes them as local tasks, obeys cancels.

    It is also this process's launcher (see :func:`streams.live.launcher.use_launcher`), so runs the
    recovery sweep takes over here are executed here.
    """

    def __init__(self, max_runs: int | None = None, layer: Any = None) -> None:
        self.max_runs = max_runs or settings.STREAMSCOPE_WORKER_MAX_RUNS
        self.layer = layer or workers_layer()
        self.local = AsyncioLauncher()
        self.control_channel = ""
        self._early_cancels: dict[int, float] = {}
        self._loops: list[asyncio.Task] = []
        self._side_tasks: set[asyncio.Task] = set()
        self._claiming: set[asyncio.Task] = set()
        self.started = 0

    @property
    def tasks(self) -> dict[int, asyncio.Task]:
        return self.local.tasks

    # Launcher protocol, for runs handed to this process directly (recovery).
    async def launch(self, run_id: int, resume: bool = False) -> None:
        if len(self.tasks) >= self.max_runs:
            # Full: give the claim back and let another worker take it from the queue.
            await database_sync_to_async(release_claim)(run_id)
            await send_launch(run_id, resume)
            return
        await self._start(run_id, resume)

    async def cancel(self, run_id: int) -> bool:
        if self._cancel_local(run_id):
            return True
        await send_cancel(run_id)
        return False

    async def start(self) -> None:
        """Join the control group and begin taking runs; returns at once."""
        self.control_channel = await self.layer.new_channel("streamworker")
        await self.layer.group_add(CONTROL_GROUP, self.control_channel)
        self._loops = [
            asyncio.create_task(self._take_runs(), name="streamworker-take"),
            asyncio.create_task(self._listen_control(), name="streamworker-control"),
            asyncio.create_task(renew_membership(self.layer, CONTROL_GROUP, self.control_channel, MEMBERSHIP_REFRESH_S,
                                                 "the stream worker"), name="streamworker-membership"),
        ]
        for task in self._loops:
            task.add_done_callback(_report_crash)

    async def stop_taking(self) -> None:
        """Stop taking new runs and leave the control group (running runs go on)."""
        for task in self._loops:
            task.cancel()
        await asyncio.gather(*self._loops, *self._claiming, return_exceptions=True)
        self._loops = []
        if self.control_channel:
            await self.layer.group_discard(CONTROL_GROUP, self.control_channel)

    async def drain(self, timeout: float) -> int:
        """Wait up to ``timeout`` s for running runs to end; returns how many still run."""
        deadline = time.monotonic() + timeout
        while self.tasks and time.monotonic() < deadline:
            await asyncio.wait(list(self.tasks.values()), timeout=min(1.0, max(0.0, deadline - time.monotonic())))
        return len(self.tasks)

    async def _take_runs(self) -> None:
        while True:
            if len(self.tasks) + len(self._claiming) >= self.max_runs:
                # Full: leave the queue to other workers until a run ends.
                await asyncio.sleep(FULL_POLL_S)
                continue
            message = await self.layer.receive(RUNS_CHANNEL)
            # Claim concurrently: 200 runs launched at once must not wait in line for each other.
            claiming = asyncio.create_task(self._launch_from(message))
            self._claiming.add(claiming)
            claiming.add_done_callback(self._claiming.discard)

    async def _launch_from(self, message: dict[str, Any]) -> None:
        try:
            await self.handle_launch(message)
        except Exception:
            log.exception("could not start a run from message %r", message)

    async def handle_launch(self, message: dict[str, Any]) -> None:
        try:
            run_id = int(message["run_id"])
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a launch message without a run id: %r", message)
            return
        if not await self._claim(run_id):
            log.debug("run %s is already claimed or ended; launch message ignored", run_id)
            return
        await self._start(run_id, bool(message.get("resume")))

    async def _claim(self, run_id: int) -> bool:
        """Claim with a few retries: the launch message is gone once taken, so a passing database
        error (a lock, a dropped pooled connection) must not leave the run queued until the
        recovery sweep finds it."""
        for attempt in range(CLAIM_ATTEMPTS):
            try:
                # Off the thread the runs' batches are written on, so a claim never queues behind them.
                return await database_sync_to_async(claim, thread_sensitive=False)(run_id)
            except (OperationalError, InterfaceError) as exc:
                if attempt == CLAIM_ATTEMPTS - 1:
                    raise
                log.warning("run %s: claiming failed (%s); trying again", run_id, exc)
                await asyncio.sleep(CLAIM_BACKOFF_S * 2**attempt)
        return False

    async def _start(self, run_id: int, resume: bool) -> None:
        if self._early_cancels.pop(run_id, None) is not None:
            await end_unheld(run_id)
            return
        await self.local.launch(run_id, resume=resume)
        self.started += 1

    async def _listen_control(self) -> None:
        while True:
            message = await self.layer.receive(self.control_channel)
            if message.get("type") == "run.cancel":
                try:
                    self.handle_cancel(int(message["run_id"]))
                except (KeyError, TypeError, ValueError):
                    log.warning("ignoring a malformed cancel message: %r", message)

    def handle_cancel(self, run_id: int) -> None:
        if self._cancel_local(run_id):
            log.info("run %s cancelled on request", run_id)
            return
        now = time.monotonic()
        self._early_cancels = {k: v for k, v in self._early_cancels.items() if now - v < EARLY_CANCEL_TTL_S}
        self._early_cancels[run_id] = now

    def _cancel_local(self, run_id: int) -> bool:
        task = self.tasks.get(run_id)
        if task is None or task.done():
            return False
        task.cancel()
        task.add_done_callback(lambda done: self._after_cancel(run_id, done))
        return True

    def _after_cancel(self, run_id: int, task: asyncio.Task) -> None:
        if task.cancelled():
            # Cancelled before the runner began, so it never recorded its end: do it here.
            side = asyncio.ensure_future(end_unheld(run_id))
            self._side_tasks.add(side)
            side.add_done_callback(self._side_tasks.discard)


def _report_crash(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.critical("stream worker loop %s crashed; this worker no longer takes or cancels runs",
                     task.get_name(), exc_info=task.exception())
