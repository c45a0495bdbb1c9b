"""Taking runs out: the SSE and JSONL downloads, streamed from the database in batches
(``streams.history.export``) without loading a run at once.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET

from streams.history import export as exports
from streams.history import retention
from streams.models import Run

EXPORT_BATCH = 500  # pieces (events) per trip to the database thread


@database_sync_to_async
def _visible_run(user: Any, run_id: int) -> Run | None:
    return Run.objects.visible_to(user).select_related("owner").filter(pk=run_id).first()


async def _in_batches(pieces: Iterator[str]) -> AsyncIterator[str]:
    """Serve a sync generator that reads the database from the request's sync thread."""
    def next_batch() -> list[str]:
        return list(itertools.islice(pieces, EXPORT_BATCH))

    take = sync_to_async(next_batch, thread_sensitive=True)
    while True:
        batch = await take()
        if not batch:
            return
        yield "".join(batch)


async def _export(request: HttpRequest, run_id: int, fmt: str) -> HttpResponse | StreamingHttpResponse:
    user = await request.auser()
    run = await _visible_run(user, run_id)
    if run is None:
        raise Http404("No such run")
    if run.events_pruned_at is not None:
        return HttpResponse(retention.pruned_note(run), status=410, content_type="text/plain; charset=utf-8")
    if fmt == "sse" and (body := await database_sync_to_async(exports.whole_body)(run)) is not None:
        # Answered whole (stream false): what came on the wire was this JSON, not an event stream.
        response = HttpResponse(body, content_type="application/json; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.json"'
        response["X-Content-Type-Options"] = "nosniff"
        return response
    if fmt == "sse":
        pieces, content_type = exports.sse_events(run), "text/event-stream; charset=utf-8"  # no whole body, above
    else:
        pieces, content_type = exports.export_jsonl(run), "application/x-ndjson; charset=utf-8"
    response = StreamingHttpResponse(_in_batches(pieces), content_type=content_type)
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}.{fmt}"'
    response["X-Content-Type-Options"] = "nosniff"
    return response


@require_GET
async def export_sse(request: HttpRequest, run_id: int) -> HttpResponse | StreamingHttpResponse:
    return await _export(request, run_id, "sse")


@require_GET
async def export_jsonl(request: HttpRequest, run_id: int) -> HttpResponse | StreamingHttpResponse:
    return await _export(request, run_id, "jsonl")
