"""The review queue: staff and members of the ``reviewer`` group judge finished runs one by one.

``GET /review/`` shows the next run waiting (or ``?run=<id>``); verdicts and skips are POSTs
that redirect back to the queue with the same filters. Everyone else gets a 403.
"""

from __future__ import annotations

from functools import wraps
from typing import Any

from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from dashboard.pages.common import CATALOGUE
from dashboard.serializers import run_json
from streams.models import ModerationResult, ModerationRule, Run, Verdict
from streams.protocol.values import BadValue, parse_id
from streams.review.verdicts import (
    QueueFilters,
    count_waiting,
    history,
    is_reviewer,
    next_in_queue,
    record_verdict,
    remember_skip,
)

SKIP_SESSION_KEY = "review_skipped"
NOTE_MAX_CHARS = 5000


def _bad_request(message: str) -> HttpResponse:
    return HttpResponse(message, status=400, content_type="text/plain; charset=utf-8")


def _id_or_zero(text: str) -> int:
    """An id from the query, or 0 (no run has it) when it is not one: "no such run" either way."""
    try:
        return parse_id(text, "run")
    except BadValue:
        return 0


def reviewer_required(view):
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not is_reviewer(request.user):
            raise PermissionDenied("The review queue is for staff and members of the reviewer group.")
        return view(request, *args, **kwargs)

    return wrapper


def _skipped(request: HttpRequest) -> list[int]:
    return [int(v) for v in request.session.get(SKIP_SESSION_KEY, []) if isinstance(v, int)]


def _queue_url(filters: QueueFilters) -> str:
    query = filters.to_query()
    return reverse("review_queue") + (f"?{query}" if query else "")


@reviewer_required
def review_queue(request: HttpRequest) -> HttpResponse:
    try:
        filters = QueueFilters.from_query(request.GET)
    except BadValue as exc:
        return _bad_request(str(exc))
    skipped = _skipped(request)
    requested = request.GET.get("run", "")
    if requested:
        run = Run.objects.visible_to(request.user).select_related("owner").filter(pk=_id_or_zero(requested)).first()
        if run is None:
            raise Http404("No such run")
    else:
        run = next_in_queue(request.user, filters, skipped)
    waiting = count_waiting(request.user, filters)
    context: dict[str, Any] = {
        "run": run,
        "filters": filters,
        "filter_query": filters.to_query(),
        "waiting": waiting,
        "skipped_count": len(skipped),
        "waiting_more": waiting > 10_000,
        # Read at most once a minute: a DISTINCT over every run took 0.36 s at a million runs.
        "models": cache.get_or_set("streamscope-review-models", lambda: list(
            Run.objects.order_by("model").values_list("model", flat=True).distinct()[:200]), 60),
        "rules": ModerationRule.objects.order_by("name").values_list("pk", "name"),
        "verdict_kinds": Verdict.Kind.choices,
    }
    if run is not None:
        context.update(
            run_json=run_json(run),
            catalogue=CATALOGUE,
            flags=list(run.flags.all()),
            verdicts=history(run),
            moderation=ModerationResult.objects.filter(run=run).first(),
        )
    return render(request, "review.html", context)


@require_POST
@reviewer_required
def review_verdict(request: HttpRequest, run_id: int) -> HttpResponse:
    run = Run.objects.visible_to(request.user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run")
    verdict = request.POST.get("verdict", "")
    if verdict not in Verdict.Kind.values:
        return _bad_request(f"Unknown verdict {verdict!r}: use approved, flagged or rejected.")
    try:  # every field is checked before anything is written
        filters = QueueFilters.from_query(request.POST)
    except BadValue as exc:
        return _bad_request(str(exc))
    record_verdict(run, request.user, verdict, request.POST.get("note", "")[:NOTE_MAX_CHARS])
    request.session[SKIP_SESSION_KEY] = [r for r in _skipped(request) if r != run.pk]
    return HttpResponseRedirect(_queue_url(filters))


@require_POST
@reviewer_required
def review_skip(request: HttpRequest, run_id: int) -> HttpResponse:
    if not Run.objects.visible_to(request.user).filter(pk=run_id).exists():
        raise Http404("No such run")
    try:
        filters = QueueFilters.from_query(request.POST)
    except BadValue as exc:
        return _bad_request(str(exc))
    request.session[SKIP_SESSION_KEY] = remember_skip(_skipped(request), run_id)
    return HttpResponseRedirect(_queue_url(filters))
