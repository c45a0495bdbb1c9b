"""The replay page: one stored run played back at its original timing (or faster)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.pages.common import CATALOGUE
from dashboard.serializers import run_json
from streams.history.replay_clock import MAX_SPEED, MIN_SPEED
from streams.history.replay_upstream import token_info
from streams.history.retention import pruned_note
from streams.models import Run

SPEEDS = ["0.25", "0.5", "1", "2", "5", "10", "max"]


def replay(request: HttpRequest, run_id: int) -> HttpResponse:
    run = Run.objects.visible_to(request.user).select_related("owner").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run")
    is_owner = run.owner_id == request.user.pk
    context = {
        "run": run,
        "run_json": run_json(run),
        "pruned_note": pruned_note(run),
        "catalogue": CATALOGUE,
        "speeds": SPEEDS,
        "speed_range": f"{MIN_SPEED:g}–{MAX_SPEED:g}",
        "is_owner": is_owner,
        "token": token_info(run) if is_owner else None,
        "upstream_url": request.build_absolute_uri(f"/replay/{run.pk}/v1"),
    }
    return render(request, "replay.html", context)
