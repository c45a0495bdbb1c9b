"""Finding runs whose process died, and taking them over.

Every live process runs a housekeeper (Daphne: scheduled when the ASGI app is imported; a worker
calls :func:`start_housekeeping`). Every few seconds it looks for active runs that nobody runs any
more: the process named in ``Run.worker`` is gone from this host, or its heartbeat is stale. It
claims each one atomically (so two processes never take the same run), then resumes it from its
last stored event when the upstream still has the response (background mode), else marks it
``interrupted``. Events stored before the crash are never touched.

The same loop applies event retention (:func:`prune_if_due`) when a deployment sets one, and folds
the insights roll-up (:func:`fold_if_due`).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time
from datetime import timedelta
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from streams.history import retention, rollup
from streams.live.executor import WORKER_NAME
from streams.live.launcher import get_launcher, publish_end
from streams.live.recorder import RunRecorder, replay_run, stored_ending, unended
from streams.models import ACTIVE_STATUSES, ModerationRule, Run, RunSource, RunStatus
from streams.pipeline.flush_clock import flush_clock
from streams.pipeline.store import catch_up_row

log = logging.getLogger(__name__)

HOST = socket.gethostname()
_housekeeper: asyncio.Task | None = None


def _process_alive(worker: str) -> bool | None:
    """True/False for a worker on this host; None when it lives elsewhere (can't tell)."""
    host, _, pid = worker.rpartition(":")
    if host != HOST or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_orphans() -> list[Run]:
    """Active runs whose executing process is dead (same host) or silent for too long.

    Judged from five columns of every candidate; only the orphans' rows are loaded whole. Every
    process sweeps every 2 s and every run held by another process is a candidate (its pid is
    checked), so loading each whole (request, output text, metrics) cost a web process watching
    a worker's 200 runs ~13 ms of CPU and its database thread ~23 ms per sweep."""
    stale_before = timezone.now() - timedelta(seconds=settings.STREAMSCOPE_STALE_AFTER_S)
    long_stale_before = timezone.now() - timedelta(seconds=settings.STREAMSCOPE_STALE_AFTER_S * 6)
    candidates = Run.objects.filter(status__in=list(ACTIVE_STATUSES)).exclude(worker=WORKER_NAME)
    candidates = candidates.filter(Q(heartbeat_at__lt=stale_before) | ~Q(worker="") | Q(heartbeat_at__isnull=True))
    alive_by_worker: dict[str, bool | None] = {}
    judged: dict[int, tuple[str, str, object]] = {}
    columns = ("pk", "status", "worker", "heartbeat_at", "created_at")
    for pk, status, worker, heartbeat_at, created_at in candidates.values_list(*columns):
        if worker not in alive_by_worker:
            alive_by_worker[worker] = _process_alive(worker) if worker else None
        alive = alive_by_worker[worker]
        last_sign = heartbeat_at or created_at
        if (alive is False or (alive is None and last_sign < stale_before)
                # The process lives but this run's task stopped beating: a busy process still beats
                # every 2 s, so only a much longer silence counts (taking over a live run would fork it).
                or (alive and last_sign < long_stale_before)):
            judged[pk] = (status, worker, heartbeat_at)
    if not judged:
        return []
    # claim() compares status, worker and heartbeat with the row it is given: a row that beat or
    # changed hands since it was judged here is left out (the next sweep judges it again).
    rows = Run.objects.filter(pk__in=list(judged)).order_by("pk")
    return [run for run in rows if judged[run.pk] == (run.status, run.worker, run.heartbeat_at)]


def find_own_orphans(unended: set[int], held: set[int]) -> tuple[list[Run], set[int]]:
    """Active runs of this very process that nothing here runs any more (not in ``held``): silent for
    six times STREAMSCOPE_STALE_AFTER_S, as another process judges a live process's run (a run whose
    recorder never began: its client left while its row was being inserted; a take-over that failed
    once), or for once that when its end's write failed (``unended``: streams/live/recorder.py). Such
    runs stayed ``streaming`` until the process restarted, in one process for good. A run waiting for
    its provider beats meanwhile (its recorder is in the flush clock). Also returns the ids in
    ``unended`` whose run has ended meanwhile (a retry wrote the end, a Stop), to be forgotten."""
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.STREAMSCOPE_STALE_AFTER_S)
    long_stale_before = now - timedelta(seconds=settings.STREAMSCOPE_STALE_AFTER_S * 6)
    silent = Q(heartbeat_at__lt=long_stale_before) | Q(heartbeat_at__isnull=True, created_at__lt=long_stale_before)
    rows = Run.objects.filter(status__in=list(ACTIVE_STATUSES), worker=WORKER_NAME).filter(
        silent | Q(pk__in=list(unended))).order_by("pk")
    orphans = [run for run in rows if run.pk not in held and (run.heartbeat_at or run.created_at) < stale_before]
    ended = unended - {run.pk for run in rows}
    return orphans, ended


def held_here() -> set[int]:
    """The runs this process's event loop runs now: recorded (the flush clock's) or launched."""
    held = {run_id for run in flush_clock().runs if (run_id := getattr(run, "run_id", None)) is not None}
    return held | set(getattr(get_launcher(), "tasks", ()))


def claim(run: Run) -> bool:
    """Take the run over unless another process was quicker (compare-and-set on the row)."""
    claimed = Run.objects.filter(
        pk=run.pk, status=run.status, worker=run.worker, heartbeat_at=run.heartbeat_at
    ).update(worker=WORKER_NAME, heartbeat_at=timezone.now())
    return claimed == 1


def resumable(run: Run) -> bool:
    # A gateway run belongs to its client's connection (and maybe the client's own key): when the
    # process serving it dies, that connection is gone too, so the run ends interrupted.
    return bool(run.background and run.response_id and run.last_upstream_seq is not None
                and run.source != RunSource.GATEWAY)


def ended_from_log(run: Run) -> bool | None:
    """:func:`end_from_log`, and None (the run resumed or interrupted as before) when it fails."""
    try:
        return end_from_log(run)
    except Exception:
        log.exception("run %s: ending it from its stored events failed", run.pk)
        return None


def end_from_log(run: Run) -> bool | None:
    """End the run as its stored events say it ended, when they hold its end (the process died after
    storing them and before writing the end on the row): True when written here, False when a Stop
    ended it meanwhile (and told its viewers). None, changing nothing, when they do not hold its
    end, or when a moderation stop rule may have ended it otherwise (a rule can match on the terminal
    event itself, after it was stored: the run then ended cancelled, which the log does not say)."""
    if ModerationRule.objects.filter(enabled=True, action=ModerationRule.Action.STOP).exclude(
            scope=ModerationRule.Scope.INPUT).exists():
        return None
    recorder = replayed(run)
    ending = stored_ending(recorder)
    if ending is None:
        return None
    run.status, error = ending
    fields = recorder.final_fields(run.status, error)  # its text, usage and metrics as its events say
    if recorder.response_id and not run.response_id:
        fields["response_id"] = recorder.response_id
    return still_ours(run).update(**fields) == 1  # a Stop that ended it meanwhile stands


def still_ours(run: Run) -> Any:
    """The run's row while it is active and held by this process (claimed): a dashboard Stop that ended
    the orphan after it was claimed is not overwritten."""
    return Run.objects.filter(pk=run.pk, status__in=list(ACTIVE_STATUSES), worker=WORKER_NAME)


def mark_interrupted(run: Run) -> bool:
    """End the claimed run interrupted; False when a Stop ended it meanwhile (and told its viewers)."""
    error = {
        "message": "the process streaming this run stopped (crash or restart) and the upstream "
        "response could not be resumed; the events stored before that are all kept",
        "code": "interrupted",
    }
    # The row's copy of the text is up to TEXT_EVERY_S behind the stored events, and its metrics are
    # written only at a run's end: both from the events.
    return still_ours(run).update(**replayed(run).final_fields(RunStatus.INTERRUPTED, error)) == 1


def replayed(run: Run) -> RunRecorder:
    """The run's stored events replayed (:func:`replay_run`), once per recovery of it: ending it from
    its log and then marking it interrupted read the same events (it is claimed: nothing is added)."""
    replay = getattr(run, "_replayed", None)
    if replay is None:
        replay = run._replayed = replay_run(run)
    return replay


async def recover_once() -> list[int]:
    """One sweep: returns the ids of runs this process took over."""
    taken = []
    orphans = await database_sync_to_async(find_orphans)()
    own, ended = await database_sync_to_async(find_own_orphans)(set(unended), held_here())
    unended.difference_update(ended)
    for run in orphans + own:
        if not await database_sync_to_async(claim)(run):
            continue
        unended.discard(run.pk)  # taken: from now on silent runs' rule (a failed take-over: again in a minute)
        taken.append(run.pk)
        try:
            await take_over(run)
        except Exception:
            log.exception("run %s: taking it over failed", run.pk)
        finally:
            run.__dict__.pop("_replayed", None)  # a sweep of many orphans keeps one replay at a time
    return taken


async def take_over(run: Run) -> None:
    """A claimed orphan resumed, ended as its log says, or marked interrupted."""
    await database_sync_to_async(catch_up_row)(run)
    if run.status == RunStatus.QUEUED and not run.started_at:
        log.warning("run %s was never started by %s; starting it here", run.pk, run.worker or "anyone")
        await get_launcher().launch(run.pk)
    elif (written := await database_sync_to_async(ended_from_log)(run)) is not None:
        if written:  # else a Stop ended it meanwhile, and published its end
            log.warning("run %s lost its process (%s) after its last events were stored; ended %s from them",
                        run.pk, run.worker, run.status)
            await publish_row_end(run.pk)
    elif resumable(run):
        log.warning("run %s lost its process (%s); resuming after upstream seq %s",
                    run.pk, run.worker, run.last_upstream_seq)
        await get_launcher().launch(run.pk, resume=True)
    else:
        log.warning("run %s lost its process (%s) and cannot be resumed; marked interrupted", run.pk, run.worker)
        if await database_sync_to_async(mark_interrupted)(run):
            await publish_row_end(run.pk)


async def publish_row_end(run_id: int) -> None:
    """The end this sweep wrote on the run's row, told to its viewers as its recorder would."""
    await publish_end(await Run.objects.aget(pk=run_id))


async def housekeep() -> None:
    last_prune = last_fold = None
    while True:
        try:
            await recover_once()
        except Exception:
            log.exception("recovery sweep failed; trying again shortly")
        last_prune = await prune_if_due(last_prune)
        last_fold = await fold_if_due(last_fold)
        await asyncio.sleep(settings.STREAMSCOPE_RECOVERY_INTERVAL_S)


async def prune_if_due(last: float | None) -> float | None:
    """Event retention (streams/history/retention.py), at most once per ``STREAMSCOPE_PRUNE_INTERVAL_S``
    per process, when ``STREAMSCOPE_EVENT_RETENTION_DAYS`` is set. Returns when it last ran."""
    days = settings.STREAMSCOPE_EVENT_RETENTION_DAYS
    now = time.monotonic()
    if days is None or (last is not None and now - last < settings.STREAMSCOPE_PRUNE_INTERVAL_S):
        return last
    try:
        result = await database_sync_to_async(retention.prune_events)(timedelta(days=days))
        if result.runs:
            log.info("retention: deleted %d events of %d runs older than %d days", result.events, result.runs, days)
    except Exception:
        log.exception("pruning events failed; trying again in an hour")
    return now


async def fold_if_due(last: float | None) -> float | None:
    """The insights roll-up (streams/history/rollup.py), at most once per ``rollup.FOLD_EVERY_S`` per process."""
    now = time.monotonic()
    if last is not None and now - last < rollup.FOLD_EVERY_S:
        return last
    try:
        await database_sync_to_async(rollup.fold_a_while)()
    except Exception:
        log.exception("folding the insights roll-up failed; trying again in a minute")
    return now


def start_housekeeping(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Start the sweep on ``loop`` (default: the running loop), once per process."""
    global _housekeeper
    if _housekeeper is not None and not _housekeeper.done():
        return
    loop = loop or asyncio.get_running_loop()
    _housekeeper = loop.create_task(housekeep(), name="streamscope-housekeeper", context=contextvars.Context())
