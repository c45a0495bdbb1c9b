"""Event retention: delete the events of old runs in small batches, keep everything else.

A run's summary, output, usage, metrics (and their indexed columns), flags, verdicts and moderation
result are kept; only its Event rows go, and ``events_pruned_at`` records when, so its pages can say
why replay and export are unavailable. A pinned run keeps its events. Deletes run in batches of
:data:`BATCH_EVENTS` ids, each committed on its own, so no statement holds locks for long and writers
of live runs interleave freely. Settings and scheduling: docs/operations.md, "Retention".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import transaction
from django.utils import timezone

from streams.models import TERMINAL_STATUSES, Event, Run

log = logging.getLogger(__name__)

BATCH_EVENTS = 5000  # event ids per DELETE statement
BATCH_RUNS = 200  # runs looked at per round
_SPAN = re.compile(r"([0-9]{1,6})([dh]?)")


def pruned_note(run: Run) -> str:
    """What pages and APIs say about a run whose events were deleted (empty when they were not)."""
    if run.events_pruned_at is None:
        return ""
    return (f"This run's events were deleted on {run.events_pruned_at:%Y-%m-%d} under the event retention setting "
            "(its summary, output, metrics, flags and verdicts are kept), so it cannot be replayed or exported.")


class BadSpan(ValueError):
    pass


def parse_span(text: str) -> timedelta:
    """``30d``, ``12h`` or a plain number of days."""
    match = _SPAN.fullmatch(text.strip())
    if not match:
        raise BadSpan(f"give an age such as 30d, 12h or 30 (days); got {text[:40]!r}")
    amount, unit = int(match.group(1)), match.group(2) or "d"
    return timedelta(days=amount) if unit == "d" else timedelta(hours=amount)


@dataclass
class PruneResult:
    runs: int = 0
    events: int = 0
    dry_run: bool = False


def prunable(cutoff: datetime):
    """Runs whose events may go: ended before ``cutoff``, not pinned, not pruned already, with events."""
    return (Run.objects.filter(status__in=TERMINAL_STATUSES, pinned=False, events_pruned_at__isnull=True,
                               created_at__lt=cutoff, event_count__gt=0)
            .exclude(finished_at__gte=cutoff).order_by("id"))


def prune_events(older_than: timedelta, *, dry_run: bool = False, now: datetime | None = None,
                 batch_events: int = BATCH_EVENTS, batch_runs: int = BATCH_RUNS) -> PruneResult:
    """Delete the events of every :func:`prunable` run older than ``older_than``; count what went (or would)."""
    cutoff = (now or timezone.now()) - older_than
    result = PruneResult(dry_run=dry_run)
    if dry_run:
        runs = prunable(cutoff)
        result.runs = runs.count()
        result.events = Event.objects.filter(run__in=runs).count()
        return result
    last_id = 0
    while True:
        run_ids = list(prunable(cutoff).filter(id__gt=last_id).values_list("id", flat=True)[:batch_runs])
        if not run_ids:
            return result
        last_id = run_ids[-1]
        for run_id in run_ids:
            result.events += _delete_events_of(run_id, batch_events)
            # Pinned meanwhile? Then its remaining events stay and it is not marked pruned.
            marked = Run.objects.filter(pk=run_id, pinned=False, events_pruned_at__isnull=True) \
                .update(events_pruned_at=timezone.now())
            result.runs += marked


def _delete_events_of(run_id: int, batch: int) -> int:
    deleted = 0
    while True:
        with transaction.atomic():
            if Run.objects.filter(pk=run_id, pinned=True).exists():
                return deleted
            ids = list(Event.objects.filter(run_id=run_id).order_by("id").values_list("id", flat=True)[:batch])
            if not ids:
                return deleted
            # Event has no dependants: one DELETE ... WHERE id IN (...) per batch.
            count, _ = Event.objects.filter(id__in=ids).delete()
        deleted += count
