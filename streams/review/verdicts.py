"""Reviewing runs: verdicts (kept as history), the derived review state, and the review queue.

A run's review state is derived in one function, :func:`refresh_review_state`: the latest
verdict decides; with no verdict, a run some rule (or the moderation model) flagged is
``flagged``, any other run ``unreviewed``. It is stored on ``Run.review_state`` for filters.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.db import transaction
from django.db.models import Case, Exists, IntegerField, OuterRef, Q, QuerySet, Value, When

from streams.models import (
    REVIEWER_GROUP,
    TERMINAL_STATUSES,
    ReviewState,
    Run,
    RunFlag,
    Verdict,
    is_reviewer,
)
from streams.protocol.values import clean_text, parse_id

__all__ = ["REVIEWER_GROUP", "is_reviewer", "refresh_review_state", "record_verdict", "QueueFilters",
           "queue_runs", "next_in_queue", "count_waiting", "MAX_SKIPPED"]

MAX_SKIPPED = 200  # skipped runs remembered per reviewer session (they go to the back of the queue)


def derive_review_state(latest_verdict: str | None, has_flags: bool) -> str:
    if latest_verdict:
        return latest_verdict
    return ReviewState.FLAGGED if has_flags else ReviewState.UNREVIEWED


def refresh_review_state(run_id: int) -> str:
    """Recompute and store a run's review state. The only writer of ``Run.review_state``."""
    latest = Verdict.objects.filter(run_id=run_id).order_by("-created_at", "-id") \
        .values_list("verdict", flat=True).first()
    state = derive_review_state(latest, RunFlag.objects.filter(run_id=run_id).exists())
    Run.objects.filter(pk=run_id).update(review_state=state)
    return state


def record_verdict(run: Run, reviewer: Any, verdict: str, note: str = "") -> Verdict:
    """Add one verdict to the run's history (never overwriting an earlier one)."""
    if verdict not in Verdict.Kind.values:
        raise ValueError(f"unknown verdict {verdict!r}; expected one of {', '.join(Verdict.Kind.values)}")
    with transaction.atomic():
        record = Verdict.objects.create(run=run, reviewer=reviewer, verdict=verdict, note=note.strip())
        run.review_state = refresh_review_state(run.pk)
    return record


def record_verdicts(runs: Iterable[Run], reviewer: Any, verdict: str, note: str = "") -> int:
    count = 0
    for run in runs:
        record_verdict(run, reviewer, verdict, note)
        count += 1
    return count


@dataclass(frozen=True)
class QueueFilters:
    flagged_only: bool = False
    model: str = ""
    rule_id: int | None = None

    @classmethod
    def from_query(cls, query: Any) -> QueueFilters:
        """The filters in a query or form; :class:`BadValue` when ``rule`` is not an id."""
        rule = str(query.get("rule") or "").strip()
        return cls(
            flagged_only=query.get("flagged") in ("1", "on", "true"),
            model=clean_text(str(query.get("model") or "")[:200]),
            rule_id=parse_id(rule, "rule") if rule else None,
        )

    def to_query(self) -> str:
        params: dict[str, Any] = {}
        if self.flagged_only:
            params["flagged"] = "1"
        if self.model:
            params["model"] = self.model
        if self.rule_id is not None:
            params["rule"] = self.rule_id
        return urlencode(params)


def queue_runs(reviewer: Any, filters: QueueFilters = QueueFilters(), skipped: Sequence[int] = ()) -> QuerySet[Run]:
    """Finished runs waiting for a decision, in the order a reviewer should see them.

    Waiting: unreviewed or flagged, and not last judged by this reviewer (a run *you* flagged
    waits for someone else). Order: flagged first, then oldest first; runs this reviewer
    skipped go to the back, in the order they were skipped.
    """
    runs = _waiting(reviewer)
    runs = _filtered(runs, filters)
    skipped = list(skipped)[-MAX_SKIPPED:]
    skip_rank = Case(*(When(pk=run_id, then=Value(rank)) for rank, run_id in enumerate(skipped, start=1)),
                     default=Value(0), output_field=IntegerField()) if skipped else Value(0)
    flag_rank = Case(When(review_state=ReviewState.FLAGGED, then=Value(0)), default=Value(1),
                     output_field=IntegerField())
    return runs.annotate(skip_rank=skip_rank, flag_rank=flag_rank).order_by("skip_rank", "flag_rank", "created_at",
                                                                            "id")


def _waiting(reviewer: Any) -> QuerySet[Run]:
    """Finished, unreviewed or flagged, and not last judged by ``reviewer``. The last judgement is
    looked up among this reviewer's own verdicts (a few), not per waiting run (a million)."""
    later = Verdict.objects.filter(Q(created_at__gt=OuterRef("created_at"))
                                   | Q(created_at=OuterRef("created_at"), id__gt=OuterRef("id")),
                                   run_id=OuterRef("run_id"))
    theirs_last = Verdict.objects.filter(reviewer_id=reviewer.pk).exclude(Exists(later)).values("run_id")
    return Run.objects.filter(status__in=list(TERMINAL_STATUSES),
                              review_state__in=[ReviewState.UNREVIEWED, ReviewState.FLAGGED]) \
        .exclude(pk__in=theirs_last)


def _filtered(runs: QuerySet[Run], filters: QueueFilters) -> QuerySet[Run]:
    if filters.flagged_only:
        runs = runs.filter(review_state=ReviewState.FLAGGED)
    if filters.model:
        runs = runs.filter(model=filters.model)
    if filters.rule_id is not None:
        runs = runs.filter(pk__in=RunFlag.objects.filter(rule_id=filters.rule_id).values("run_id"))
    return runs


def next_in_queue(reviewer: Any, filters: QueueFilters = QueueFilters(), skipped: Sequence[int] = ()) -> Run | None:
    """The first run of :func:`queue_runs`, found without sorting the whole queue: the oldest flagged
    run, else the oldest unreviewed one (each an index walk in created order), else the skipped runs
    in the order they were skipped."""
    skipped = list(skipped)[-MAX_SKIPPED:]
    runs = _filtered(_waiting(reviewer), filters).select_related("owner")
    for state in (ReviewState.FLAGGED, ReviewState.UNREVIEWED):
        run = runs.filter(review_state=state).exclude(pk__in=skipped).order_by("created_at", "id").first()
        if run is not None:
            return run
    waiting = {run.pk: run for run in runs.filter(pk__in=skipped)}
    return next((waiting[run_id] for run_id in skipped if run_id in waiting), None)


def count_waiting(reviewer: Any, filters: QueueFilters = QueueFilters(), cap: int = 10_000) -> int:
    """How many runs wait, counted up to ``cap`` + 1 (the page says "more than 10,000")."""
    return _filtered(_waiting(reviewer), filters)[: cap + 1].count()


def remember_skip(skipped: list[int], run_id: int) -> list[int]:
    """The skip list after skipping ``run_id``: it moves to the very back."""
    updated = [r for r in skipped if r != run_id] + [run_id]
    return updated[-MAX_SKIPPED:]


def history(run: Run) -> list[Verdict]:
    return list(run.verdicts.select_related("reviewer").order_by("-created_at", "-id"))
