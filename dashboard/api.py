"""The JSON API under /api/. Session cookie auth; writes need the X-CSRFToken header.

Every error is JSON ``{"error": {"message", "code"}}`` with a fitting 4xx status.
"""

from __future__ import annotations

import json
from functools import wraps
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import reverse

from dashboard.forms import RunRequestForm
from streams import store
from streams.models import Run
from streams.providers import get_providers
from streams.runs import TooManyActiveRuns, cancel_run, start_run

PAGE_SIZE = 50
MAX_EVENTS_PAGE = 5000


def error(message: str, code: str, status: int, **extra: Any) -> JsonResponse:
    return JsonResponse({"error": {"message": message, "code": code, **extra}}, status=status)


def api_view(*methods: str):
    """Login (JSON 401, not a redirect) and allowed methods for an async API view."""

    def decorate(view):
        @login_not_required
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                return error(f"method {request.method} not allowed here", "method_not_allowed", 405)
            user = await request.auser()
            if not user.is_authenticated:
                return error("log in first (session cookie)", "not_authenticated", 401)
            request.user = user
            return await view(request, *args, **kwargs)

        return wrapper

    return decorate


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "status": run.status,
        "provider": run.provider,
        "model": run.model,
        "owner": run.owner.get_username(),
        "request": run.request,
        "input": run.input_text,
        "output_text": run.output_text,
        "usage": run.usage,
        "metrics": run.metrics,
        "error": run.error,
        "event_count": run.event_count,
        "imported": run.imported,
        "background": run.background,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "url": reverse("run_detail", args=[run.pk]),
        "ws": f"/ws/runs/{run.pk}/",
    }


@database_sync_to_async
def _visible_run(user: Any, run_id: int) -> Run | None:
    run = Run.objects.select_related("owner").filter(pk=run_id).first()
    return run if run is not None and run.visible_to(user) else None


def _not_found() -> JsonResponse:
    return error("no such run (or it is not yours)", "not_found", 404)


@api_view("GET", "POST")
async def runs(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return await _create_run(request)
    return await database_sync_to_async(_list_runs)(request)


def _list_runs(request: HttpRequest) -> JsonResponse:
    try:
        page = max(1, int(request.GET.get("page", "1")))
    except ValueError:
        return error("page must be a positive integer", "bad_request", 400)
    runs_qs = Run.objects.select_related("owner").order_by("-created_at", "-id")
    if not (request.user.is_staff and request.GET.get("all") == "1"):
        runs_qs = runs_qs.filter(owner=request.user)
    start = (page - 1) * PAGE_SIZE
    page_runs = list(runs_qs[start : start + PAGE_SIZE + 1])
    has_next = len(page_runs) > PAGE_SIZE
    return JsonResponse(
        {"runs": [run_json(run) for run in page_runs[:PAGE_SIZE]], "page": page,
         "next_page": page + 1 if has_next else None}
    )


def json_object_body(request: HttpRequest) -> dict[str, Any] | JsonResponse:
    """The request's JSON object, or the JSON error response that explains why there is none."""
    if request.content_type != "application/json":
        return error("send a JSON body with Content-Type: application/json", "bad_request", 415)
    try:
        body = json.loads(request.body or b"null")
    except ValueError as exc:
        return error(f"the body is not valid JSON: {exc}", "bad_json", 400)
    if not isinstance(body, dict):
        return error("the body must be a JSON object", "bad_request", 400)
    return body


def form_errors(form: Any, prefix: str = "invalid request", **extra: Any) -> JsonResponse:
    """A 400 naming the first problem in the message and every problem under ``fields``."""
    fields = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
    first = next(iter(fields.values()))[0]
    return error(f"{prefix}: {first}", "invalid", 400, fields=fields, **extra)


async def _create_run(request: HttpRequest) -> HttpResponse:
    body = json_object_body(request)
    if isinstance(body, JsonResponse):
        return body
    for key in ("provider", "model", "input", "instructions"):
        if key in body and not isinstance(body[key], str):
            return error(f"{key} must be a string", "invalid", 400, fields={key: ["must be a string"]})
    data = {"provider": "simulator", **{k: body[k] for k in ("provider", "model", "input", "instructions") if k in body}}
    form = RunRequestForm({**data, "params": body.get("params")})
    if not await database_sync_to_async(form.is_valid)():
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
async def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = await _visible_run(request.user, run_id)
    if run is None:
        return _not_found()
    return JsonResponse(run_json(run))


@api_view("GET")
async def run_events(request: HttpRequest, run_id: int) -> HttpResponse:
    run = await _visible_run(request.user, run_id)
    if run is None:
        return _not_found()
    try:
        after = int(request.GET.get("after", "-1"))
        limit = int(request.GET.get("limit", "1000"))
    except ValueError:
        return error("after and limit must be integers", "bad_request", 400)
    if limit < 1 or limit > MAX_EVENTS_PAGE:
        return error(f"limit must be between 1 and {MAX_EVENTS_PAGE}", "bad_request", 400)
    rows = await database_sync_to_async(store.encoded_events_after)(run.pk, max(after, -1), limit + 1)
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
        return _not_found()
    await cancel_run(run)
    run = await _visible_run(request.user, run_id)
    return JsonResponse({"id": run.pk, "status": run.status}, status=202)


@api_view("GET")
async def providers(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"providers": [p.public() for p in get_providers().values()]})
