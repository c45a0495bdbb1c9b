"""The compare page: up to four runs side by side (figures, timelines, word diff), or a picker."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.pages.common import CATALOGUE
from dashboard.pages.replay import SPEEDS
from dashboard.serializers import run_json
from streams.history.compare import MAX_RUNS, BadCompareRequest, RunNotFound, compare_ids, load_compare
from streams.models import Run, RunGroup
from streams.protocol.values import parse_id


def compare(request: HttpRequest) -> HttpResponse:
    if not request.GET.getlist("runs") and not request.GET.get("group"):
        recent = Run.objects.filter(owner=request.user).order_by("-created_at", "-id")[:12]
        groups = RunGroup.objects.filter(owner=request.user).prefetch_related("members")[:8]
        return render(request, "compare.html", {"empty": True, "recent": recent, "groups": groups,
                                                "max_runs": MAX_RUNS, "catalogue": CATALOGUE})
    try:
        ids = compare_ids(request.user, request.GET.getlist("runs"), request.GET.get("group", ""))
        data = load_compare(request.user, ids)
    except BadCompareRequest as exc:
        return render(request, "compare.html", {"problem": str(exc), "max_runs": MAX_RUNS, "catalogue": CATALOGUE},
                      status=400)
    except RunNotFound as exc:
        raise Http404(str(exc)) from exc
    runs = {run.pk: run for run in Run.objects.select_related("owner").filter(pk__in=ids)}
    group_id = request.GET.get("group", "")
    context = {
        "compare": data,
        "runs_json": [run_json(runs[run_id]) for run_id in ids],
        "catalogue": CATALOGUE,
        "speeds": SPEEDS,
        # compare_ids has parsed it already when the runs came from the group
        "group_id": parse_id(group_id, "group") if group_id and not request.GET.getlist("runs") else None,
        "max_runs": MAX_RUNS,
    }
    return render(request, "compare.html", context)
