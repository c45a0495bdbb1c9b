"""Runs in the JSON API: list and start them, read one and its events, cancel one, list providers.

Session cookie auth; writes need the X-CSRFToken header.
"""

from __future__ import annotations

import json
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from dashboard.api.common import api_view, error, form_errors, json_object_body, run_not_found
from dashboard.forms import RunRequestForm
from dashboard.serializers import run_json, run_summary_json
from streams.history import fleet
from streams.live.control import TooManyActiveRuns, cancel_run, start_run
from streams.models import Run
from streams.pipeline import store
from streams.protocol.values import MAX_ID, BadValue, parse_int, parse_signed_int
from streams.upstream.providers import get_providers

MAX_PAGE = 1_000_000
MAX_EVENTS_PAGE = 5000


def visible_run(user: Any, run_id: int) -> Run | None:
    """The run ``run_id`` with its owner if ``user`` may see it, else None. A caller's own run is
    one query (the rule, ``Run.objects.visible_to``, shows every active user their own runs); anyone
    else's goes through the rule itself (staff and reviewers see every run)."""
    run = Run.objects.select_related("owner").filter(pk=run_id).first()
    if run is None or (run.owner_id == user.pk and user.is_authenticated and user.is_active):
        return run
    return Run.objects.visible_to(user).select_related("owner").filter(pk=run_id).first()


_visible_run = database_sync_to_async(visible_run)


@login_not_required
async def runs(request: HttpRequest) -> HttpResponse:
    """``GET``: the caller's runs, in one hop to the request's thread; ``POST``: start one."""
    if request.method == "POST":
        return await _create_run(request)
    return await _list_runs(request)


@api_view("GET")
def _list_runs(request: HttpRequest) -> JsonResponse:
    """``{"runs": [summary...], "next": cursor|null}``: filters, search, sort and keyset pages
    (streams/history/fleet.py). The older ``page`` (offset pages, adds ``page``/``next_page``) and
    ``all=1`` (everyone's runs the caller may see, not just their own) still work."""
    try:
        query = fleet.parse_run_query(request.GET, extra=("page", "all"), getlist=request.GET.getlist)
        page = parse_int(request.GET["page"], "page", minimum=1, maximum=MAX_PAGE) if "page" in request.GET else None
    except fleet.BadQuery as exc:
        return error(str(exc), "bad_request", 400, param=exc.param)
    except BadValue as exc:
        return error(str(exc), "bad_request", 400, param="page")
    if page is not None and query.cursor is not None:
        return error("send either page or cursor, not both", "bad_request", 400, param="cursor")
    own_only = request.GET.get("all") != "1" and not query.owner
    if own_only and request.user.is_active:
        # Every active user sees their own runs (Run.objects.visible_to): no query to ask the rule.
        runs_qs = Run.objects.filter(owner=request.user)
    else:
        runs_qs = Run.objects.visible_to(request.user)
        if own_only:
            runs_qs = runs_qs.filter(owner=request.user)
    # A list item shows neither (dashboard/serializers.py run_summary_json): their JSON, decoded and
    # cleaned per run (Run.from_db), was ~0.7-1.7 ms of a 50-run page.
    runs_qs = runs_qs.select_related("owner").defer("usage", "metrics")
    runs_qs = fleet.apply_filters(runs_qs, query)
    if page is not None:
        start = (page - 1) * query.limit
        page_runs = list(fleet.ordered(runs_qs, query)[start : start + query.limit + 1])
        has_next = len(page_runs) > query.limit
        return JsonResponse({"runs": [run_summary_json(run) for run in page_runs[: query.limit]], "next": None,
                             "page": page, "next_page": page + 1 if has_next else None})
    page_runs, next_cursor = fleet.page_of(runs_qs, query)
    return JsonResponse({"runs": [run_summary_json(run) for run in page_runs], "next": next_cursor})


@api_view("POST")
async def _create_run(request: HttpRequest) -> HttpResponse:
    body = json_object_body(request)
    if isinstance(body, JsonResponse):
        return body
    for key in ("provider", "model", "input", "instructions"):
        if key in body and not isinstance(body[key], str):
            return error(f"{key} must be a string", "invalid", 400, fields={key: ["must be a string"]})
    data = {"provider": "simulator",
            **{k: body[k] for k in ("provider", "model", "input", "instructions") if k in body}}
    form = RunRequestForm({**data, "params": body.get("params")})
    if not form.is_valid():  # no I/O (the providers come from settings): on the event loop, no hop
        return form_errors(form)
    cleaned = form.cleaned_data
    try:
        run = await start_run(
            request.user, cleaned["provider"], cleaned["model"], cleaned["input"],
            cleaned.get("instructions", ""), cleaned["params"],
        )
    except TooManyActiveRuns as exc:
        return error(str(exc), "too_many_active_runs", 429)
    return JsonResponse(
        {"id": run.pk, "status": run.status, "url": reverse("run_detail", args=[run.pk]), "ws": f"/ws/runs/{run.pk}/"},
        status=201,
    )


@api_view("GET")
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = visible_run(request.user, run_id)
    if run is None:
        return run_not_found()
    return JsonResponse(run_json(run))


@api_view("GET")
def run_events(request: HttpRequest, run_id: int) -> HttpResponse:
    run = visible_run(request.user, run_id)
    if run is None:
        return run_not_found()
    try:
        after = parse_signed_int(request.GET.get("after", "-1"), "after", minimum=-1, maximum=MAX_ID)
        limit = parse_int(request.GET.get("limit", "1000"), "limit", minimum=1, maximum=MAX_EVENTS_PAGE)
    except BadValue as exc:
        return error(str(exc), "bad_request", 400)
    rows = store.encoded_events_after(run.pk, max(after, -1), limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    next_after = rows[-1][0] if more and rows else None
    # Records are spliced in pre-encoded: the event data goes out exactly as it was stored.
    body = '{"events":[' + ",".join(encoded for _, encoded in rows) + '],"next_after":' + json.dumps(next_after) + "}"
    return HttpResponse(body, content_type="application/json")


@api_view("POST")
async def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = await _visible_run(request.user, run_id)
    if run is None:
        return run_not_found()
    if not await database_sync_to_async(run.controllable_by)(request.user):
        return error("only the run's owner (or staff) can cancel it", "forbidden", 403)
    await cancel_run(run)
    run = await _visible_run(request.user, run_id)
    return JsonResponse({"id": run.pk, "status": run.status}, status=202)


@api_view("GET")
async def providers(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"providers": [p.public() for p in get_providers().values()]})
