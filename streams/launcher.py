"""Where runs execute. Views call :func:`get_launcher` and never care which backend it is.

The embedded default, :class:`AsyncioLauncher`, runs each run as an asyncio task on the loop of
the process that received the request (Daphne's). :class:`WorkerLauncher` (``STREAMSCOPE_LAUNCHER=
worker``) hands runs to stream-worker processes over the Redis channel layer; see docs/scaling.md.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from typing import Protocol

from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from django.utils.module_loading import import_string

from streams.broadcast import publish_status
from streams.models import ACTIVE_STATUSES, Run, RunStatus

log = logging.getLogger(__name__)


class Launcher(Protocol):
    async def launch(self, run_id: int, resume: bool = False) -> None:
        """Start executing a queued run (or resume an orphaned one) and return at once."""

    async def cancel(self, run_id: int) -> bool:
        """Ask the run to stop; True when something was running it."""


class AsyncioLauncher:
    """Runs as tasks on the current event loop; keeps a strong reference to each task."""

    def __init__(self) -> None:
        self.tasks: dict[int, asyncio.Task] = {}
        self._bookkeeping: set[asyncio.Task] = set()

    async def launch(self, run_id: int, resume: bool = False) -> None:
        from streams.runner import RunRunner

        # A fresh context: the task must not inherit the request's (asgiref ties thread-sensitive
        # database calls to a per-request executor that is gone once the response is sent).
        task = asyncio.get_running_loop().create_task(
            RunRunner(run_id, resume=resume).execute(), name=f"run-{run_id}", context=contextvars.Context()
        )
        self.tasks[run_id] = task
        task.add_done_callback(lambda done, run_id=run_id: self._forget(run_id, done))

    def _forget(self, run_id: int, task: asyncio.Task) -> None:
        if self.tasks.get(run_id) is task:
            del self.tasks[run_id]
        if task.cancelled():
            # Cancelled before the runner's body ever ran, so nothing recorded the end: do it here.
            self._bookkeeping.add(
                asyncio.get_running_loop().create_task(database_sync_to_async(mark_orphan_cancelled)(run_id))
            )
            for pending in list(self._bookkeeping):
                if pending.done():
                    self._bookkeeping.discard(pending)
        elif task.exception() is not None:
            log.error("run %s: runner task crashed", run_id, exc_info=task.exception())

    async def cancel(self, run_id: int) -> bool:
        task = self.tasks.get(run_id)
        if task is not None and not task.done():
            task.cancel()
            return True
        # Nothing here runs it (the process that did is gone): end it in the store.
        await database_sync_to_async(mark_orphan_cancelled)(run_id)
        return False


class WorkerLauncher:
    """Hands runs to stream-worker processes (``manage.py streamworker``) over the channel layer.

    A launch is one message on the general channel :data:`streams.worker.RUNS_CHANNEL`: Redis
    gives each message to one waiting worker, which claims the run in the database before it
    starts it (so a message delivered twice starts it once). The run row is the durable record:
    a message lost while no worker listens is picked up by the recovery sweep. A cancel goes to
    every worker through a group; the one holding the run stops it.
    """

    async def launch(self, run_id: int, resume: bool = False) -> None:
        from streams import worker

        # Recovery may have claimed the run in this (web) process: let a worker claim it instead.
        await database_sync_to_async(worker.release_claim)(run_id)
        await worker.send_launch(run_id, resume)

    async def cancel(self, run_id: int) -> bool:
        from streams import worker

        if await database_sync_to_async(worker.cancel_unclaimed)(run_id):
            # Nobody had it yet: it is ended in the store, and any late claim now fails.
            await publish_status(run_id, RunStatus.CANCELLED, {}, None)
            return False
        await worker.send_cancel(run_id)
        return True


def mark_orphan_cancelled(run_id: int) -> None:
    Run.objects.filter(pk=run_id, status__in=list(ACTIVE_STATUSES)).update(
        status=RunStatus.CANCELLED, finished_at=timezone.now()
    )


BACKENDS = {"asyncio": AsyncioLauncher, "worker": WorkerLauncher}

_launcher: Launcher | None = None


def get_launcher() -> Launcher:
    """This process's launcher: ``STREAMSCOPE_LAUNCHER`` (a short name or a dotted path)."""
    global _launcher
    if _launcher is None:
        backend = settings.STREAMSCOPE_LAUNCHER
        if backend == "worker" and isinstance(get_channel_layer(), InMemoryChannelLayer):
            raise ImproperlyConfigured(
                "STREAMSCOPE_LAUNCHER=worker hands runs to stream-worker processes over the channel "
                "layer, and the in-memory layer reaches no other process: set REDIS_URL"
            )
        factory = BACKENDS.get(backend) or import_string(backend)
        _launcher = factory()
    return _launcher


def use_launcher(launcher: Launcher | None) -> None:
    """Set this process's launcher (a stream worker runs what it is handed locally)."""
    global _launcher
    _launcher = launcher
