"""Pages: the playground, the run list and the run page. Thin: data comes from streams/."""

from __future__ import annotations


from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render

from dashboard.api import run_json
from streams.catalogue import catalogue_json
from streams.models import Run
from streams.providers import get_providers

# The event catalogue, once per process, for the pages' renderer (colours, families, deltas).
CATALOGUE = catalogue_json()


def _providers_json() -> list[dict]:
    return [provider.public() for provider in get_providers().values()]


def playground(request: HttpRequest) -> HttpResponse:
    return render(request, "playground.html", {"providers": _providers_json(), "catalogue": CATALOGUE})


def run_list(request: HttpRequest) -> HttpResponse:
    runs = Run.objects.select_related("owner").order_by("-created_at", "-id")
    show_all = request.user.is_staff and request.GET.get("all") == "1"
    if not show_all:
        runs = runs.filter(owner=request.user)
    page = Paginator(runs, 50).get_page(request.GET.get("page"))
    return render(request, "run_list.html", {"page": page, "show_all": show_all})


def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = Run.objects.select_related("owner").filter(pk=run_id).first()
    if run is None or not run.visible_to(request.user):
        raise Http404("No such run")
    return render(request, "run_detail.html", {"run": run, "run_json": run_json(run), "catalogue": CATALOGUE})


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF refusals: JSON for the API (its contract), Django's page elsewhere."""
    if request.path.startswith("/api/"):
        from dashboard.api import error

        return error(f"CSRF check failed: {reason}. Send the X-CSRFToken header.", "csrf_failed", 403)
    from django.views.csrf import csrf_failure as default_failure

    return default_failure(request, reason)


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/api/"):
        from dashboard.api import error

        return error("no such API route or object", "not_found", 404)
    from django.views.defaults import page_not_found

    return page_not_found(request, exception)
