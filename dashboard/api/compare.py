"""Comparing runs in the JSON API: ``GET /api/compare/?runs=1,2[,3,4]`` (or ``?group=<id>``) gives
figures, series and word diffs. Every run named must be visible to the caller, else 404.
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from dashboard.api.common import api_view, error
from streams.history.compare import BadCompareRequest, RunNotFound, compare_ids, load_compare


def _compare(user: Any, query: Any) -> JsonResponse:
    try:
        ids = compare_ids(user, query.getlist("runs"), query.get("group", ""))
        return JsonResponse(load_compare(user, ids))
    except BadCompareRequest as exc:
        return error(str(exc), "bad_request", 400)
    except RunNotFound as exc:
        return error(str(exc), "not_found", 404)


@api_view("GET")
async def compare(request: HttpRequest) -> HttpResponse:
    return await database_sync_to_async(_compare)(request.user, request.GET)
