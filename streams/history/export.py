"""Export a stored run as SSE text or as Streamscope JSONL, streamed from the database.

Both read events with ``.iterator(chunk_size=2000)``, so a 200k-event run is never loaded at
once; each yields ``str`` pieces ready for a StreamingHttpResponse or stdout.

- SSE: every event's ``data`` exactly as received, in order. ``event: <type>`` precedes it
  (chat chunks and untyped JSON get data-only frames, as such servers send them);
  ``streamscope.done`` becomes ``data: [DONE]``; ``streamscope.malformed`` gives back the raw
  text that could not be parsed; other ``streamscope.*`` markers are not wire data and are left out.
- JSONL: a header line ``{"streamscope": 1, "run": {...}}`` then one ``{"seq", "t", "type",
  "data"}`` record per event (``data`` is the JSON text as a string, so it survives verbatim).
  :func:`streams.history.importer.import_stream` reads it back into an equal run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from streams.models import Run
from streams.protocol import catalogue
from streams.protocol.rebuild import RESPONSE_BODY

CHUNK_SIZE = 2000
JSONL_VERSION = 1
DATA_ONLY_TYPES = frozenset({catalogue.CHAT_CHUNK, catalogue.UNTYPED})


def export_sse(run: Run) -> Iterator[str]:
    """The run's events as a ``text/event-stream`` body; for an answer that came whole (stream false),
    that answer as stored (:func:`whole_body`): there was no event stream."""
    body = whole_body(run)
    if body is not None:
        yield body
    else:
        yield from sse_events(run)


def sse_events(run: Run) -> Iterator[str]:
    """The run's events as SSE frames (a streamed run's :func:`export_sse`, its whole body known absent)."""
    events = run.events.order_by("seq").values_list("type", "data")
    for event_type, data in events.iterator(chunk_size=CHUNK_SIZE):
        frame = sse_frame(event_type, data)
        if frame:
            yield frame


def whole_body(run: Run) -> str | None:
    """A non-streamed answer's body as stored (the gateway's one ``streamscope.response_body`` event:
    the JSON that came; a body that was not a JSON object, its first 64 KiB in a ``{"raw", "error"}``
    object), which its SSE export gives instead of an empty stream; None for a streamed run."""
    return run.events.filter(seq=0, type=RESPONSE_BODY).values_list("data", flat=True).first()  # its only event


def sse_frame(event_type: str, data: str) -> str:
    """One SSE frame for a stored event ('' for markers that were never on the wire)."""
    if event_type == catalogue.DONE_MARKER:
        return f"data: {_marker(data).get('raw') or '[DONE]'}\n\n"
    if event_type == catalogue.MALFORMED:
        marker = _marker(data)
        raw = marker.get("raw") if isinstance(marker.get("raw"), str) else data
        if marker.get("where") == "line":
            return f"{raw}\n\n"  # a line that was not an SSE field: give it back as it was
        name = marker.get("event")
        return (f"event: {name}\n" if isinstance(name, str) and name else "") + _data_lines(raw)
    if event_type.startswith(catalogue.STREAMSCOPE_PREFIX) and event_type != catalogue.UNTYPED:
        return ""
    if event_type in DATA_ONLY_TYPES:
        return _data_lines(data)
    return f"event: {event_type}\n" + _data_lines(data)


def export_jsonl(run: Run) -> Iterator[str]:
    """A header line describing the run, then one line per event with its timing."""
    yield _dumps({"streamscope": JSONL_VERSION, "run": run_header(run)}) + "\n"
    events = run.events.order_by("seq").values_list("seq", "t", "type", "data")
    for seq, t, event_type, data in events.iterator(chunk_size=CHUNK_SIZE):
        yield _dumps({"seq": seq, "t": t, "type": event_type, "data": data}) + "\n"


def run_header(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "provider": run.provider,
        "model": run.model,
        "request": run.request,
        "status": run.status,
        "output_text": run.output_text,
        "usage": run.usage,
        "metrics": run.metrics,
        "error": run.error,
        "response_id": run.response_id,
        "event_count": run.event_count,
        "imported": run.imported,
        "source_name": run.source_name,
        "created_at": _iso(run.created_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
    }


def _data_lines(data: str) -> str:
    # A payload that spanned several `data:` lines was joined with "\n": split it back.
    return "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


def _marker(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None
