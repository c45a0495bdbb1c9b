"""Pages: the playground, the run list and the run page. Thin: data comes from streams/."""

from __future__ import annotations

import csv
from typing import Any

from django.http import Http404, HttpRequest, HttpResponse, QueryDict
from django.shortcuts import redirect, render
from django.views.decorators.http import require_POST

from dashboard.pages.common import CATALOGUE
from dashboard.serializers import run_json, run_summary_json
from streams.history import fleet, retention
from streams.models import ReviewState, Run, RunSource, RunStatus, is_reviewer
from streams.upstream.providers import get_providers


def _providers_json() -> list[dict]:
    return [provider.public() for provider in get_providers().values()]


def playground(request: HttpRequest) -> HttpResponse:
    return render(request, "playground.html", {"providers": _providers_json(), "catalogue": CATALOGUE})


SORT_LABELS = {
    "created_at": "Created", "ttfb_ms": "First byte", "ttfc_ms": "Created event", "ttft_ms": "First token",
    "ttfr_ms": "First reasoning", "ttfa_ms": "First tool args", "duration_ms": "Duration",
    "tokens_per_s": "Tokens/s", "event_count": "Events",
}
CSV_COLUMNS = ("id", "status", "provider", "model", "owner", "source", "review_state", "created_at",
               "finished_at", "ttfb_ms", "ttfc_ms", "ttft_ms", "ttfr_ms", "ttfa_ms", "duration_ms",
               "tokens_per_s", "event_count", "input", "output")


def run_list(request: HttpRequest) -> HttpResponse:
    """The runs list: filters, search, sort and next-page cursor all live in the URL (GET form);
    ``?format=csv`` exports the rows the same URL shows."""
    params = request.GET
    context: dict[str, Any] = {
        "form": params, "statuses": RunStatus.values, "sources": RunSource.values,
        "review_states": ReviewState.values, "can_see_all": is_reviewer(request.user),
        "sort_options": list(SORT_LABELS.items()),
    }
    try:
        query = fleet.parse_run_query(params, extra=("all", "format", "page"), getlist=params.getlist)
        if params.get("format", "html") not in ("html", "csv"):
            raise fleet.BadQuery("format", "format must be html or csv")
    except fleet.BadQuery as exc:
        return render(request, "run_list.html", {**context, "error": str(exc), "rows": []}, status=400)
    runs = Run.objects.visible_to(request.user).select_related("owner")
    show_all = params.get("all") == "1" or bool(query.owner)
    if not show_all:
        runs = runs.filter(owner=request.user)
    runs = fleet.apply_filters(runs, query)
    rows, next_cursor = fleet.page_of(runs, query)
    if params.get("format") == "csv":
        return _csv(rows)
    context.update({
        "rows": rows, "show_all": show_all, "query": query, "source": query.source,
        "next_url": _url(params, cursor=next_cursor) if next_cursor else "",
        "first_url": _url(params, cursor=None) if query.cursor else "",
        "csv_url": _url(params, format="csv"),
        "sort_links": {name: _url(params, cursor=None, sort=_toggled(query, name)) for name in SORT_LABELS},
        "filtered": any(key not in ("all", "cursor", "sort", "limit") and value for key, value in params.items()),
    })
    return render(request, "run_list.html", context)


def _toggled(query: fleet.RunQuery, name: str) -> str:
    """The sort a column heading links to: the other direction if already sorted by it, else descending."""
    if query.sort_field == name:
        return name if query.descending else f"-{name}"
    return f"-{name}"


def _url(params: QueryDict, **changes: Any) -> str:
    query = params.copy()
    for key, value in changes.items():
        if value is None:
            query.pop(key, None)
        else:
            query[key] = value
    query.pop("page", None)
    return "?" + query.urlencode()


def _csv(rows: list[Run]) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = 'attachment; filename="runs.csv"'
    writer = csv.writer(response)
    writer.writerow(CSV_COLUMNS)
    for run in rows:
        summary = run_summary_json(run)
        writer.writerow([_cell(summary.get(name)) for name in CSV_COLUMNS])
    return response


def _cell(value: Any) -> Any:
    """No spreadsheet formulas from run text (a cell starting with = + - @ is read as one)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return "" if value is None else value


def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = Run.objects.visible_to(request.user).select_related("owner").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run")
    return render(request, "run_detail.html", {"run": run, "run_json": run_json(run), "catalogue": CATALOGUE,
                                               "pruned_note": retention.pruned_note(run),
                                               # Stop and Pin: the owner and staff (reviewers only see)
                                               "can_act": run.controllable_by(request.user)})


@require_POST
def run_pin(request: HttpRequest, run_id: int) -> HttpResponse:
    """Pin (``pinned=1``) or unpin a run: a pinned run keeps its events whatever the retention setting."""
    run = Run.objects.controllable_by(request.user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run")
    pinned = request.POST.get("pinned") == "1"
    Run.objects.filter(pk=run.pk).update(pinned=pinned)
    return redirect("run_detail", run_id=run.pk)
