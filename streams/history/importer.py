"""Turn a recorded stream into a stored, replayable Run.

:func:`import_stream` is the entry point: :mod:`streams.history.import_formats` detects the format and
decodes the events (SSE text, JSONL export, JSON lines or array, HAR, JSON error body); this
module rebuilds the output, derives the run's fields and stores the run with its events.
Anything that cannot become a run raises :class:`ImportFailed`. docs/events.md documents the
formats and the choices made here.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction

from streams.history.import_formats import (
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_IMPORT_BYTES,
    JSONL_VERSION,
    LINE_ERROR,
    UNKNOWN_FORMAT,
    ImportedEvent,
    ImportFailed,
    ParsedStream,
    aware_datetime,
    max_events,
    max_import_bytes,
    parse_stream,
)
from streams.models import TERMINAL_STATUSES, Event, Run, RunStatus
from streams.protocol import catalogue
from streams.protocol.metrics import column_values, compute_metrics
from streams.protocol.output_model import RebuiltOutput
from streams.protocol.rebuild import rebuild_output
from streams.protocol.values import clean_text

__all__ = [
    "BATCH_SIZE",
    "DEFAULT_MAX_EVENTS",
    "DEFAULT_MAX_IMPORT_BYTES",
    "ECHOED_REQUEST_KEYS",
    "JSONL_VERSION",
    "LINE_ERROR",
    "TIMING_KEYS",
    "UNKNOWN_FORMAT",
    "ImportedEvent",
    "ImportFailed",
    "ParsedStream",
    "import_stream",
    "max_events",
    "max_import_bytes",
    "parse_stream",
]

BATCH_SIZE = 1000
# Timing figures that mean nothing when the file carried no arrival times.
TIMING_KEYS = (
    "ttfb_ms",
    "ttfe_ms",
    "ttfc_ms",
    "ttft_ms",
    "ttfr_ms",
    "ttfa_ms",
    "ttfd_ms",
    "duration_ms",
    "tokens_per_s",
    "gap_p50_ms",
    "gap_p95_ms",
    "gap_max_ms",
)
# What a re-run needs from the echoed response object when the request itself was not recorded.
ECHOED_REQUEST_KEYS = (
    "model",
    "instructions",
    "tools",
    "tool_choice",
    "temperature",
    "top_p",
    "max_output_tokens",
    "reasoning",
    "text",
    "background",
    "metadata",
    "previous_response_id",
)


def import_stream(
    content: bytes, *, owner: Any, filename: str = "", har_entry: int | None = None
) -> Run:
    """Store ``content`` as a new imported Run of ``owner`` and return it.

    ``har_entry`` picks which event-stream response of a HAR file to import (0-based; the
    first by default). The returned run has an extra ``import_notes`` list (not stored).
    Raises :class:`ImportFailed` for anything that cannot become a run.
    """
    parsed = parse_stream(content, har_entry=har_entry)
    rebuilt = rebuild_output((event.type, event.payload) for event in parsed.events)
    fields = _run_fields(parsed, rebuilt)
    with transaction.atomic():
        run = Run.objects.create(
            owner=owner, imported=True, source="import", source_name=filename[:255], provider="import", **fields
        )
        batch: list[Event] = []
        for seq, event in enumerate(parsed.events):
            batch.append(Event(run=run, seq=seq, t=event.t, type=event.type, data=event.data))
            if len(batch) >= BATCH_SIZE:
                Event.objects.bulk_create(batch)
                batch = []
        if batch:
            Event.objects.bulk_create(batch)
    notes = [f"format: {parsed.format}", *parsed.notes]
    if rebuilt.unknown_types:
        listed = ", ".join(f"{t} ×{n}" for t, n in rebuilt.unknown_types[:10])
        notes.append(f"event types not in the catalogue (kept): {listed}")
    notes.extend(f"rebuild: {m}" for m in rebuilt.mismatches[:20])
    run.import_notes = notes  # type: ignore[attr-defined]
    return run


# -- the run ---------------------------------------------------------------------------------


def _run_fields(parsed: ParsedStream, rebuilt: RebuiltOutput) -> dict[str, Any]:
    header = parsed.header_run or {}
    response = _first_response(parsed.events)
    error = _run_error(parsed, rebuilt)
    status = header.get("status")
    if not isinstance(status, str) or status not in TERMINAL_STATUSES:
        if parsed.error_body is not None:
            status = RunStatus.FAILED
        elif rebuilt.status:
            status = rebuilt.status
        else:
            status = RunStatus.FAILED if rebuilt.error else RunStatus.INTERRUPTED
    request = parsed.request if parsed.request is not None else _request_from(response)
    model = header.get("model") or rebuilt.model or (request or {}).get("model") or ""
    metrics = _metrics(parsed)
    fields = {
        "model": str(model)[:200],
        "request": request,
        "status": status,
        "output_text": header["output_text"]
        if isinstance(header.get("output_text"), str)
        else rebuilt.output_text,
        "usage": header.get("usage", rebuilt.usage),
        "metrics": metrics,
        **column_values(metrics),
        "error": header.get("error", error),
        "response_id": str(header.get("response_id") or rebuilt.response_id or "")[:200],
        "event_count": len(parsed.events),
        "started_at": parsed.started_at,
        "finished_at": aware_datetime(header.get("finished_at")) or _finished_at(parsed),
    }
    return {key: _clean(value) for key, value in fields.items()}


def _finished_at(parsed: ParsedStream) -> datetime | None:
    if parsed.started_at is None or parsed.duration_ms is None:
        return None
    try:
        return parsed.started_at + timedelta(milliseconds=parsed.duration_ms)
    except OverflowError:
        return None


def _run_error(parsed: ParsedStream, rebuilt: RebuiltOutput) -> dict[str, Any] | None:
    if parsed.error_body is not None:
        body = parsed.error_body
        inner = body.get("error") if isinstance(body, dict) else None
        inner = (
            inner
            if isinstance(inner, dict)
            else {"message": inner}
            if isinstance(inner, str)
            else {}
        )
        message = inner.get("message")
        return {
            "message": message
            if isinstance(message, str) and message
            else "the request was rejected",
            "code": inner.get("code") if isinstance(inner.get("code"), str) else None,
            "http_status": parsed.http_status,
            "body": body,
        }
    if rebuilt.error is None:
        return None
    return {
        "message": rebuilt.error.message,
        "code": rebuilt.error.code,
        "http_status": None,
        "body": rebuilt.error.body,
    }


def _metrics(parsed: ParsedStream) -> dict[str, Any]:
    header_metrics = (parsed.header_run or {}).get("metrics")
    if isinstance(header_metrics, dict) and header_metrics:
        return header_metrics  # what the original run measured (with real byte counts)
    metrics = compute_metrics((e.t, e.type, e.payload, e.nbytes) for e in parsed.events)
    metrics["timed"] = parsed.timed
    if not parsed.timed:
        for key in TIMING_KEYS:
            metrics[key] = None
        if parsed.first_byte_ms is not None and parsed.events:
            metrics["ttfe_ms"] = metrics["ttfb_ms"] = round(parsed.first_byte_ms, 1)
        if parsed.duration_ms is not None:
            metrics["duration_ms"] = round(parsed.duration_ms, 1)
    return metrics


def _first_response(events: list[ImportedEvent]) -> dict[str, Any] | None:
    for event in events:
        phase = catalogue.describe(event.type).phase
        if phase in (catalogue.LIFECYCLE, catalogue.TERMINAL) and isinstance(event.payload, dict):
            response = event.payload.get("response")
            if isinstance(response, dict):
                return response
    return None


def _request_from(response: dict[str, Any] | None) -> dict[str, Any]:
    """A minimal request rebuilt from what the response echoes; ``{}`` when nothing is known."""
    if not response:
        return {}
    request = {
        key: response[key]
        for key in ECHOED_REQUEST_KEYS
        if response.get(key) not in (None, "", [], {}, False)
    }
    if request:
        request["stream"] = True
    return request


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): _clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
