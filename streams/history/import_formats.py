"""Recognise a recorded stream's format and decode its events, without touching the database.

Accepted formats (detected from the content, not the file name):
SSE text (any server's ``text/event-stream`` body), Streamscope's JSONL export
(:mod:`streams.history.export`), plain JSON lines of events, a JSON array of events, a browser HAR file
(its first ``text/event-stream`` response) and a JSON error body (a request rejected before
streaming). Anything else raises :class:`ImportFailed` with a message meant for the person
importing. :mod:`streams.history.importer` stores the result as a run; docs/events.md documents the
formats and the choices made here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings

from streams.protocol import catalogue
from streams.protocol.sse import EventTooLarge, SSEDecoder
from streams.protocol.values import clean_text

DEFAULT_MAX_IMPORT_BYTES = 50 * 1024 * 1024
DEFAULT_MAX_EVENTS = 200_000
JSONL_VERSION = 1
LINE_ERROR = "line is not an SSE field (expected data:, event:, id:, retry: or :comment)"
UNKNOWN_FORMAT = (
    "not a recognised stream format: expected SSE text (`data:` lines), a Streamscope JSONL "
    "export, JSON lines of events, a HAR file or a JSON error body"
)


class ImportFailed(Exception):
    """The content cannot be imported; the message says why (and what to do, when it can)."""


@dataclass(slots=True)
class ImportedEvent:
    t: float
    type: str
    data: str  # stored verbatim as Event.data
    payload: Any  # the decoded JSON (for the rebuild and metrics)
    nbytes: int


@dataclass
class ParsedStream:
    """What a file holds, before anything is stored."""

    format: str  # "sse", "jsonl", "jsonlines", "json_array", "har" or "error_body"
    events: list[ImportedEvent] = field(default_factory=list)
    timed: bool = False  # events carry real arrival times
    request: dict[str, Any] | None = None
    header_run: dict[str, Any] | None = None  # a JSONL export's run summary
    http_status: int | None = None
    error_body: Any = None
    first_byte_ms: float | None = None  # HAR: time to the first response byte
    duration_ms: float | None = None  # HAR: the whole exchange
    started_at: datetime | None = None
    notes: list[str] = field(default_factory=list)


def max_import_bytes() -> int:
    return int(getattr(settings, "STREAMSCOPE_MAX_IMPORT_BYTES", DEFAULT_MAX_IMPORT_BYTES))


def max_events() -> int:
    return int(getattr(settings, "STREAMSCOPE_MAX_EVENTS_PER_RUN", DEFAULT_MAX_EVENTS))


def parse_stream(content: bytes, *, har_entry: int | None = None) -> ParsedStream:
    """Detect the format of ``content`` and decode its events (no database access)."""
    if isinstance(content, str):
        content = content.encode("utf-8")
    limit = max_import_bytes()
    if len(content) > limit:
        raise ImportFailed(
            f"the file is {len(content)} bytes; the import limit is {limit} bytes "
            "(setting STREAMSCOPE_MAX_IMPORT_BYTES)"
        )
    content = content.removeprefix(b"\xef\xbb\xbf")
    stripped = content.strip()
    if not stripped:
        raise ImportFailed("the file is empty")
    if stripped[:1] in (b"{", b"["):
        document = _loads(stripped)
        if document is not _INVALID:
            return _parse_document(document, har_entry)
        first = _loads(stripped.split(b"\n", 1)[0].strip())
        if isinstance(first, dict) and "streamscope" in first:
            return _parse_jsonl(stripped)
        if isinstance(first, dict) and catalogue.event_type_for(first) != catalogue.UNTYPED:
            return _parse_json_lines(stripped)
    return _parse_sse(content)


# -- formats -------------------------------------------------------------------------------


class _Collector:
    """Collects events, enforcing the per-run event limit as it goes."""

    def __init__(self) -> None:
        self.events: list[ImportedEvent] = []
        self.limit = max_events()

    def add(self, t: float, event_type: str, data: str, payload: Any, nbytes: int) -> None:
        if len(self.events) >= self.limit:
            raise ImportFailed(
                f"the file holds more than {self.limit} events "
                "(setting STREAMSCOPE_MAX_EVENTS_PER_RUN)"
            )
        self.events.append(ImportedEvent(t, clean_text(event_type)[:200], data, payload, nbytes))

    def add_data(self, data: str, nbytes: int, t: float = 0.0, event_name: str = "") -> None:
        """One SSE/JSON-lines data payload: JSON event, ``[DONE]``, or malformed."""
        if data.startswith("[DONE]"):
            payload = {"raw": data}
            self.add(t, catalogue.DONE_MARKER, _dumps(payload), payload, nbytes)
            return
        try:
            payload = json.loads(data, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            self.malformed(
                data, f"invalid JSON in data line: {exc}", nbytes, t, event_name=event_name
            )
            return
        self.add(t, catalogue.event_type_for(payload, event_name), data, payload, nbytes)

    def malformed(
        self,
        raw: str,
        error: str,
        nbytes: int,
        t: float = 0.0,
        *,
        event_name: str = "",
        where: str = "data",
    ) -> None:
        payload: dict[str, Any] = {"raw": raw, "error": error, "where": where}
        if event_name:
            payload["event"] = event_name
        self.add(t, catalogue.MALFORMED, _dumps(payload), payload, nbytes)


def _parse_sse(content: bytes, t: float = 0.0) -> ParsedStream:
    collector = _Collector()
    decoder = SSEDecoder(int(getattr(settings, "STREAMSCOPE_MAX_EVENT_BYTES", 8 * 1024 * 1024)))
    skipped = renamed = 0

    def take(frames: list) -> None:
        nonlocal skipped, renamed
        for frame in frames:
            if frame.data == "":
                skipped += 1  # no data (an `event:`/`id:`/`retry:`-only frame): nothing to keep
                continue
            before = len(collector.events)
            collector.add_data(frame.data, frame.nbytes, t, event_name=frame.event)
            added = collector.events[before]
            if (
                frame.event
                and added.type != frame.event
                and added.type not in (catalogue.MALFORMED, catalogue.DONE_MARKER)
            ):
                renamed += 1

    try:
        # Line by line, so a line that is not SSE is kept at its place as a malformed event.
        for line in content.splitlines(keepends=True):
            frames = decoder.feed(line)
            for ignored in decoder.take_ignored():
                text = ignored.decode("utf-8", errors="replace")
                collector.malformed(text, LINE_ERROR, len(ignored), t, where="line")
            take(frames)
        take(decoder.close()[0])
    except EventTooLarge as exc:
        raise ImportFailed(f"{exc} (setting STREAMSCOPE_MAX_EVENT_BYTES)") from exc
    if not any(
        e.type != catalogue.MALFORMED or e.payload.get("where") == "data" for e in collector.events
    ):
        # Not one `data:` frame: whatever this is, it is not an event stream.
        raise ImportFailed(UNKNOWN_FORMAT)
    parsed = ParsedStream("sse", collector.events)
    if skipped:
        parsed.notes.append(f"{skipped} SSE frame(s) without data skipped")
    if renamed:
        parsed.notes.append(
            f"{renamed} frame(s) whose `event:` name differs from data.type; data.type kept"
        )
    return parsed


def _parse_json_lines(content: bytes) -> ParsedStream:
    """One event JSON per line, no SSE framing (as some projects store their fixtures)."""
    collector = _Collector()
    for line in content.splitlines():
        if line.strip():
            collector.add_data(line.strip().decode("utf-8", errors="replace"), len(line))
    return ParsedStream("jsonlines", collector.events)


def _parse_jsonl(content: bytes) -> ParsedStream:
    lines = content.splitlines()
    header = _loads(lines[0].strip())
    version = header.get("streamscope")
    if version != JSONL_VERSION:
        raise ImportFailed(
            f"unsupported Streamscope export version {version!r} "
            f"(this version reads {JSONL_VERSION})"
        )
    run = header.get("run") if isinstance(header.get("run"), dict) else {}
    collector = _Collector()
    for line in lines[1:]:
        if not line.strip():
            continue
        text = line.strip().decode("utf-8", errors="replace")
        record = _loads(text)
        if not (
            isinstance(record, dict)
            and isinstance(record.get("type"), str)
            and isinstance(record.get("data"), str)
        ):
            collector.malformed(text, "not a Streamscope event record", len(line), where="record")
            continue
        t = record.get("t")
        t = (
            float(t)
            if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
            else 0.0
        )
        data = clean_text(record["data"])
        payload = _loads(data)
        if payload is _INVALID:
            # Event.data is spliced verbatim into API answers and websocket frames, so only text
            # proven to be one JSON value is kept as data; anything else is kept as a malformed
            # event that quotes it (re-encoded), as SSE imports do.
            collector.malformed(data, "the record's data is not one valid JSON value", len(line), t,
                                where="record")
            continue
        collector.add(t, record["type"], data, payload, len(data.encode("utf-8")))
    metrics = run.get("metrics") if isinstance(run.get("metrics"), dict) else {}
    parsed = ParsedStream(
        "jsonl", collector.events, timed=metrics.get("timed") is not False, header_run=run
    )
    if isinstance(run.get("request"), dict):
        parsed.request = run["request"]
    parsed.started_at = aware_datetime(run.get("started_at"))
    return parsed


def _parse_document(document: Any, har_entry: int | None) -> ParsedStream:
    if isinstance(document, dict):
        log = document.get("log")
        if isinstance(log, dict) and "entries" in log:
            return _parse_har(log, har_entry)
        if "streamscope" in document:
            return _parse_jsonl(_dumps(document).encode("utf-8"))
        if "error" in document and "type" not in document and "object" not in document:
            return ParsedStream("error_body", error_body=document)
        if document.get("object") == "response":
            raise ImportFailed(
                "this is a finished Response object, not a stream; import the "
                "`text/event-stream` body of a `stream: true` request instead"
            )
        document = [document]  # a single event
    if (
        isinstance(document, list)
        and document
        and all(
            isinstance(e, dict) and catalogue.event_type_for(e) != catalogue.UNTYPED
            for e in document
        )
    ):
        # A JSON array of events (how some projects store stream fixtures).
        collector = _Collector()
        for event in document:
            data = _dumps(event)
            collector.add_data(data, len(data.encode("utf-8")))
        return ParsedStream("json_array", collector.events)
    raise ImportFailed(UNKNOWN_FORMAT)


def _parse_har(log: dict[str, Any], har_entry: int | None) -> ParsedStream:
    entries = (
        [e for e in log.get("entries") or [] if isinstance(e, dict)]
        if isinstance(log.get("entries"), list)
        else []
    )
    streams = [e for e in entries if _is_event_stream(e)]
    if not streams:
        for entry in entries:
            status, body = _http_error(entry)
            if body is not None:
                parsed = ParsedStream(
                    "har", error_body=body, http_status=status, request=_har_request(entry)
                )
                parsed.notes.append(
                    f"HAR: no event stream; imported the HTTP {status} error of {_har_url(entry)}"
                )
                return parsed
        raise ImportFailed(
            f"the HAR file holds no text/event-stream response ({len(entries)} entries)"
        )
    index = 0 if har_entry is None else har_entry
    if not 0 <= index < len(streams):
        raise ImportFailed(
            f"the HAR file holds {len(streams)} event-stream response(s); "
            f"entry {index} does not exist (use 0..{len(streams) - 1})"
        )
    entry = streams[index]
    content = entry["response"].get("content") or {}
    text = content.get("text") if isinstance(content, dict) else None
    if not isinstance(text, str) or not text:
        raise ImportFailed(
            f"the HAR entry for {_har_url(entry)} has no response body "
            "(browsers often leave event-stream bodies out of HAR exports)"
        )
    if content.get("encoding") == "base64":
        try:
            body = base64.b64decode(text, validate=False)
        except (binascii.Error, ValueError) as exc:
            raise ImportFailed(f"the HAR response body is not valid base64: {exc}") from exc
    else:
        body = text.encode("utf-8", errors="surrogatepass")
    if len(body) > max_import_bytes():
        raise ImportFailed(
            f"the HAR response body is {len(body)} bytes; the import limit is "
            f"{max_import_bytes()} bytes (setting STREAMSCOPE_MAX_IMPORT_BYTES)"
        )
    first_byte_ms, duration_ms = _har_timings(entry)
    parsed = _parse_sse(body, t=first_byte_ms or 0.0)
    parsed.format = "har"
    parsed.request = _har_request(entry)
    parsed.first_byte_ms, parsed.duration_ms = first_byte_ms, duration_ms
    parsed.started_at = aware_datetime(entry.get("startedDateTime"))
    if len(streams) > 1:
        parsed.notes.append(
            f"HAR: {len(streams)} event-stream responses; imported entry {index} "
            f"({_har_url(entry)}); choose another with har_entry / --entry"
        )
    return parsed


def _is_event_stream(entry: dict[str, Any]) -> bool:
    response = entry.get("response")
    if not isinstance(response, dict):
        return False
    content = response.get("content")
    mime = content.get("mimeType") if isinstance(content, dict) else None
    if not isinstance(mime, str) or not mime:
        headers = response.get("headers") if isinstance(response.get("headers"), list) else []
        mime = next(
            (
                h.get("value")
                for h in headers
                if isinstance(h, dict) and str(h.get("name", "")).lower() == "content-type"
            ),
            "",
        )
    return isinstance(mime, str) and mime.lower().strip().startswith("text/event-stream")


def _http_error(entry: dict[str, Any]) -> tuple[int | None, Any]:
    response = entry.get("response") if isinstance(entry.get("response"), dict) else {}
    status = response.get("status")
    content = response.get("content") if isinstance(response.get("content"), dict) else {}
    text = content.get("text")
    if not (isinstance(status, int) and status >= 400 and isinstance(text, str)):
        return None, None
    if content.get("encoding") == "base64":
        try:
            text = base64.b64decode(text).decode("utf-8", errors="replace")
        except (binascii.Error, ValueError):
            return None, None
    body = _loads(text)
    return (status, body) if isinstance(body, dict) and "error" in body else (None, None)


def _har_request(entry: dict[str, Any]) -> dict[str, Any] | None:
    """The request body (never its headers: they hold the API key)."""
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    post = request.get("postData") if isinstance(request.get("postData"), dict) else {}
    body = _loads(post.get("text")) if isinstance(post.get("text"), str) else None
    return body if isinstance(body, dict) else None


def _har_url(entry: dict[str, Any]) -> str:
    request = entry.get("request") if isinstance(entry.get("request"), dict) else {}
    return str(request.get("url") or "?")[:200]


def _har_timings(entry: dict[str, Any]) -> tuple[float | None, float | None]:
    timings = entry.get("timings") if isinstance(entry.get("timings"), dict) else {}
    phases = [timings.get(k) for k in ("blocked", "dns", "connect", "send", "wait")]
    numbers = [float(v) for v in phases if _number(v) and v >= 0]
    first_byte = round(sum(numbers), 3) if numbers else None
    if first_byte is not None and not math.isfinite(first_byte):
        first_byte = None
    total = entry.get("time")
    return first_byte, (float(total) if _number(total) and total >= 0 else None)


# -- helpers -----------------------------------------------------------------------------------

_INVALID = object()
def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _loads(text: str | bytes) -> Any:
    """Strict JSON (no NaN/Infinity); ``_INVALID`` instead of an exception."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return _INVALID


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def aware_datetime(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None
