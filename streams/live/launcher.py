"""Where runs execute. Views call :func:`get_launcher` and never care which backend it is.

The embedded default, :class:`AsyncioLauncher`, runs each run as an asyncio task on the loop of
the process that received the request (Daphne's). :class:`streams.live.worker.WorkerLauncher` (``STREAMSCOPE_LAUNCHER=
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
from django.db import transaction
from django.db.models import QuerySet
from django.utils.module_loading import import_string

from streams.live.executor import RunExecutor
from streams.live.recorder import replay_run
from streams.models import ACTIVE_STATUSES, Run, RunStatus
from streams.pipeline.broadcast import publish_status
from streams.pipeline.store import catch_up_row

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
        # A fresh context: the task must not inherit the request's (asgiref ties thread-sensitive
        # database calls to a per-request executor that is gone once the response is sent). Its
        # done callback gets the same one: by default a callback keeps a copy of the current (the
        # request's) context, with the request's locals, for the run's whole life.
        context = contextvars.Context()
        task = asyncio.get_running_loop().create_task(
            RunExecutor(run_id, resume=resume).execute(), name=f"run-{run_id}", context=context
        )
        self.tasks[run_id] = task
        task.add_done_callback(lambda done, run_id=run_id: self._forget(run_id, done), context=context)

    def _forget(self, run_id: int, task: asyncio.Task) -> None:
        if self.tasks.get(run_id) is task:
            del self.tasks[run_id]
        if task.cancelled():
            # Cancelled before the runner's body ever ran, so nothing recorded the end: do it here.
            self._bookkeeping.add(asyncio.get_running_loop().create_task(end_unheld(run_id)))
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
        await end_unheld(run_id)
        return False


async def end_unheld(run_id: int) -> None:
    """A Stop of a run no task of this process runs (:func:`mark_orphan_cancelled`), its end told
    to its viewers when it was ended here."""
    await publish_end(await database_sync_to_async(mark_orphan_cancelled)(run_id))


def mark_orphan_cancelled(run_id: int) -> Run | None:
    """End a run whose process is gone; its row first counts what the run stored after the row's
    last write (about once a second), so viewers and exports see its whole log. Returns the run as
    written, None when it was not active (nothing was ended here)."""
    return write_cancelled(Run.objects.filter(pk=run_id, status__in=list(ACTIVE_STATUSES)))


def write_cancelled(row: QuerySet[Run]) -> Run | None:
    """End the run of ``row`` (its row under the caller's guard) cancelled as recovery ends a run
    (streams/live/recovery.py): its text, usage and metrics from its stored events (the row has its
    text only every TEXT_EVERY_S, its metrics only at the end); cancelled even when the log holds a
    terminal event: the user stopped it. Returns the run as written, None when the guard held.

    The log is replayed before the transaction: on SQLite it holds the database's one write lock
    from its start, and a replay costs ~3 us per stored event (0.6 s at 200,000), which every other
    run's flush would wait for. Under the lock the row catches up with the log; a log that grew
    meanwhile (the run resumed by another process) is replayed again there."""
    run = row.first()
    if run is None:
        return None
    replay = replay_run(run)
    with transaction.atomic():
        run = row.first()
        if run is None:
            return None
        catch_up_row(run)
        if replay.metrics.event_count != run.event_count:
            replay = replay_run(run)
        fields = replay.final_fields(RunStatus.CANCELLED, None)
        if row.update(**fields) != 1:
            return None
    for name, value in fields.items():
        setattr(run, name, value)
    return run


async def publish_end(run: Run | None) -> None:
    """Tell the viewers of a run ended without its recorder (None: nothing was ended) its end, in the
    message its recorder would have published (RunRecorder._finish), so a viewer cannot tell the two
    ends apart: the metrics written, the last seq of its whole log. The end is written already: a
    publish that fails (a channel layer down) is logged, not raised into the Stop that asked for it;
    viewers learn the end from the row (dashboard/socket_watches.py, STATUS_CHECK_S)."""
    if run is None:
        return
    try:
        await publish_status(run.pk, run.status, run.metrics, run.error, last_seq=run.event_count - 1)
    except Exception as exc:
        log.warning("run %s: publishing its end failed: %r", run.pk, exc)


# Short names for STREAMSCOPE_LAUNCHER. Dotted paths, so this module does not import the worker
# (which builds on AsyncioLauncher): the dependency runs one way.
BACKENDS = {"asyncio": "streams.live.launcher.AsyncioLauncher", "worker": "streams.live.worker.WorkerLauncher"}

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
        factory = import_string(BACKENDS.get(backend, backend))
        _launcher = factory()
    return _launcher


def use_launcher(launcher: Launcher | None) -> None:
    """Set this process's launcher (a stream worker runs what it is handed locally)."""
    global _launcher
    _launcher = launcher
