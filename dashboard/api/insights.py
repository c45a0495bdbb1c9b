"""Insights in the JSON API: ``GET /api/insights/?group_by=model|provider&since=&until=&bucket=hour|day``."""

from __future__ import annotations

import orjson
from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse
from django.urls import reverse

from dashboard.api.common import api_view, error
from streams.history.fleet import BadQuery
from streams.history.insights import insights as compute
from streams.history.insights import parse_params
from streams.models import Run


@api_view("GET")
async def insights(request: HttpRequest) -> HttpResponse:
    return await database_sync_to_async(_insights)(request)


def _insights(request: HttpRequest) -> HttpResponse:
    try:
        options = parse_params(request.GET)
    except BadQuery as exc:
        return error(str(exc), "bad_request", 400, param=exc.param)
    runs = Run.objects.visible_to(request.user)
    # Who sees every run (the rule leaves the queryset unfiltered) may be answered from the roll-up,
    # which knows no owners; anyone else's figures come from their own runs.
    every_run = not runs.query.has_filters()
    body = compute(runs, list_url=reverse("run_list"), every_run=every_run, **options)
    # An hourly chart over a month is thousands of points (~1.3 MB): orjson encodes it ~8x faster than json.
    return HttpResponse(orjson.dumps(body), content_type="application/json")
