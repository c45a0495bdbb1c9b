"""Pages: the playground, the run list and the run page. Thin: data comes from streams/."""

from __future__ import annotations

from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.pages.common import CATALOGUE
from dashboard.serializers import run_json
from streams.models import Run, RunSource
from streams.upstream.providers import get_providers


def _providers_json() -> list[dict]:
    return [provider.public() for provider in get_providers().values()]


def playground(request: HttpRequest) -> HttpResponse:
    return render(request, "playground.html", {"providers": _providers_json(), "catalogue": CATALOGUE})


def run_list(request: HttpRequest) -> HttpResponse:
    runs = Run.objects.visible_to(request.user).select_related("owner").order_by("-created_at", "-id")
    show_all = request.GET.get("all") == "1"
    if not show_all:
        runs = runs.filter(owner=request.user)
    source = request.GET.get("source", "")
    if source in RunSource.values:
        runs = runs.filter(source=source)
    else:
        source = ""
    page = Paginator(runs, 50).get_page(request.GET.get("page"))
    return render(request, "run_list.html", {"page": page, "show_all": show_all, "source": source,
                                             "sources": RunSource.values})


def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = Run.objects.visible_to(request.user).select_related("owner").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run")
    return render(request, "run_detail.html", {"run": run, "run_json": run_json(run), "catalogue": CATALOGUE})
