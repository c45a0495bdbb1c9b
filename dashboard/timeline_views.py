"""Pages that look at runs in time: replay one run, compare up to four. Thin: data from streams/."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.api import run_json
from dashboard.compare_api import compare_ids
from dashboard.views import CATALOGUE
from streams.compare import MAX_RUNS, BadCompareRequest, RunNotFound, load_compare
from streams.models import Run, RunGroup
from streams.replay import MAX_SPEED, MIN_SPEED
from streams.replay_upstream import token_info

SPEEDS = ["0.25", "0.5", "1", "2", "5", "10", "max"]


def replay(request: HttpRequest, run_id: int) -> HttpResponse:
    run = Run.objects.select_related("owner").filter(pk=run_id).first()
    if run is None or not run.visible_to(request.user):
        raise Http404("No such run")
    is_owner = run.owner_id == request.user.pk
    context = {
        "run": run,
        "run_json": run_json(run),
        "catalogue": CATALOGUE,
        "speeds": SPEEDS,
        "speed_range": f"{MIN_SPEED:g}–{MAX_SPEED:g}",
        "is_owner": is_owner,
        "token": token_info(run) if is_owner else None,
        "upstream_url": request.build_absolute_uri(f"/replay/{run.pk}/v1"),
    }
    return render(request, "replay.html", context)


def compare(request: HttpRequest) -> HttpResponse:
    if not request.GET.getlist("runs") and not request.GET.get("group"):
        recent = Run.objects.filter(owner=request.user).order_by("-created_at", "-id")[:12]
        groups = RunGroup.objects.filter(owner=request.user).prefetch_related("members")[:8]
        return render(request, "compare.html", {"empty": True, "recent": recent, "groups": groups,
                                                "max_runs": MAX_RUNS, "catalogue": CATALOGUE})
    try:
        ids = compare_ids(request.user, request.GET)
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
        "group_id": int(group_id) if group_id.isdigit() else None,
        "max_runs": MAX_RUNS,
    }
    return render(request, "compare.html", context)
