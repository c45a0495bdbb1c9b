"""Finding runs among thousands: filters, full-text search, sort and keyset pagination.

Everything starts from the querysets callers pass in, which start from ``Run.objects.visible_to``:
this module narrows what a person may see, never widens it. Query-string values are parsed here,
once, with :mod:`streams.protocol.values`; a bad or unknown parameter is a :class:`BadQuery` that
names it. Search is vendor-specific (docs/metrics.md, "Finding runs").
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

from django.db import connection
from django.db.models import F, Q, QuerySet
from django.db.models.expressions import RawSQL

from streams.models import ReviewState, Run, RunFlag, RunSource, RunStatus
from streams.protocol.values import BadValue, parse_int

METRIC_COLUMNS = ("ttfb_ms", "ttfc_ms", "ttft_ms", "ttfr_ms", "ttfa_ms", "duration_ms", "tokens_per_s")
SORT_FIELDS = ("created_at", *METRIC_COLUMNS, "event_count")
DEFAULT_SORT = "-created_at"
DEFAULT_LIMIT = 50
MAX_LIMIT = 500
MAX_QUERY_CHARS = 200
MAX_NUMBER = 10**9
RARE_MATCHES = 5000  # PostgreSQL search: at most this many matches are passed on as ids
LIST_PARAMS = frozenset({
    "q", "status", "model", "provider", "source", "review_state", "owner", "flagged", "pinned", "pruned",
    "since", "until", "sort", "limit", "cursor",
    *(f"{name}_{end}" for name in (*METRIC_COLUMNS, "event_count") for end in ("min", "max")),
})
_RELATIVE = re.compile(r"([0-9]{1,5})([mhd])")
_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


class BadQuery(ValueError):
    """A query-string value the list cannot use; ``param`` names it."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class RunQuery:
    """What a person asked the runs list for, parsed."""

    q: str = ""
    status: list[str] = field(default_factory=list)
    model: str = ""
    provider: str = ""
    source: str = ""
    review_state: str = ""
    owner: str = ""
    flagged: bool | None = None
    pinned: bool | None = None
    pruned: bool | None = None
    since: datetime | None = None
    until: datetime | None = None
    ranges: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)
    sort: str = DEFAULT_SORT
    limit: int = DEFAULT_LIMIT
    cursor: tuple[Any, int] | None = None

    @property
    def sort_field(self) -> str:
        return self.sort.lstrip("-")

    @property
    def descending(self) -> bool:
        return self.sort.startswith("-")


def parse_time(text: str, name: str, now: datetime | None = None) -> datetime:
    """An ISO 8601 date or date-time (naive means UTC), or a span back from now: ``30m``, ``24h``, ``7d``."""
    text = text.strip()
    relative = _RELATIVE.fullmatch(text)
    if relative:
        amount, unit = int(relative.group(1)), relative.group(2)
        return (now or datetime.now(UTC)) - timedelta(**{_UNITS[unit]: amount})
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise BadQuery(name, f"{name} must be an ISO 8601 date or time (2026-11-29, 2026-11-29T10:00Z) "
                             f"or a span such as 24h or 7d; got {text[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _choice(params: Mapping[str, str], name: str, allowed: Iterable[str]) -> str:
    value = params.get(name, "").strip()
    allowed = list(allowed)
    if value and value not in allowed:
        raise BadQuery(name, f"{name} must be one of {', '.join(allowed)}; got {value[:40]!r}")
    return value


def _flag(params: Mapping[str, str], name: str) -> bool | None:
    value = params.get(name, "").strip().lower()
    if not value:
        return None
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise BadQuery(name, f"{name} must be 1 or 0 (true or false); got {value[:40]!r}")


def _text(params: Mapping[str, str], name: str, limit: int = 200) -> str:
    value = params.get(name, "").strip()
    if len(value) > limit:
        raise BadQuery(name, f"{name} must be at most {limit} characters")
    return value


def parse_run_query(params: Mapping[str, Any], *, extra: Iterable[str] = (), getlist: Any = None) -> RunQuery:
    """A :class:`RunQuery` from query-string ``params``; names outside the list's own and ``extra`` are refused."""
    unknown = sorted(set(params) - LIST_PARAMS - set(extra))
    if unknown:
        raise BadQuery(unknown[0], f"unknown parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                                   f"(accepted: {', '.join(sorted(LIST_PARAMS | set(extra)))})")
    query = RunQuery()
    query.q = _text(params, "q", MAX_QUERY_CHARS)
    statuses = getlist("status") if getlist else [params.get("status", "")]
    query.status = [s.strip() for value in statuses for s in value.split(",") if s.strip()]
    for status in query.status:
        if status not in RunStatus.values:
            raise BadQuery("status", f"status must be one of {', '.join(RunStatus.values)}; got {status[:40]!r}")
    query.model = _text(params, "model")
    query.provider = _text(params, "provider", 64)
    query.owner = _text(params, "owner", 150)
    query.source = _choice(params, "source", RunSource.values)
    query.review_state = _choice(params, "review_state", ReviewState.values)
    query.flagged = _flag(params, "flagged")
    query.pinned = _flag(params, "pinned")
    query.pruned = _flag(params, "pruned")
    now = datetime.now(UTC)
    for name in ("since", "until"):
        if params.get(name, "").strip():
            setattr(query, name, parse_time(params[name], name, now))
    for name in (*METRIC_COLUMNS, "event_count"):
        bounds: list[int | None] = []
        for end in ("min", "max"):
            text = params.get(f"{name}_{end}", "").strip()
            try:
                bounds.append(parse_int(text, f"{name}_{end}", maximum=MAX_NUMBER) if text else None)
            except BadValue as exc:
                raise BadQuery(f"{name}_{end}", str(exc)) from None
        if bounds != [None, None]:
            query.ranges[name] = (bounds[0], bounds[1])
    sort = params.get("sort", "").strip() or DEFAULT_SORT
    if sort.lstrip("-") not in SORT_FIELDS or sort.count("-") > 1 or (sort.count("-") == 1 and sort[0] != "-"):
        raise BadQuery("sort", f"sort must be one of {', '.join(SORT_FIELDS)}, with - in front for descending; "
                               f"got {sort[:40]!r}")
    query.sort = sort
    try:
        query.limit = parse_int(params.get("limit", "").strip() or DEFAULT_LIMIT, "limit", minimum=1,
                                maximum=MAX_LIMIT)
    except BadValue as exc:
        raise BadQuery("limit", str(exc)) from None
    if params.get("cursor", "").strip():
        query.cursor = decode_cursor(params["cursor"].strip(), query.sort)
    return query


# --- cursors ---------------------------------------------------------------------------------


def encode_cursor(sort: str, value: Any, run_id: int) -> str:
    """Opaque to callers: base64url of ``{"s": sort, "v": last value, "id": last id}``."""
    if isinstance(value, datetime):
        value = value.isoformat()
    raw = json.dumps({"s": sort, "v": value, "id": run_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str, sort: str) -> tuple[Any, int]:
    """The (value, id) a cursor holds, checked against the sort it must have been made for."""
    bad = BadQuery("cursor", "cursor is not one this list gave out; start again without it")
    if len(text) > 400:
        raise bad
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise bad from None
    if not isinstance(data, dict) or set(data) != {"s", "v", "id"}:
        raise bad
    if data["s"] != sort:
        raise BadQuery("cursor", f"cursor was made for sort={data['s']!r}, not {sort!r}; start again without it")
    try:
        run_id = parse_int(data["id"], "cursor id", minimum=1)
    except BadValue:
        raise bad from None
    value = data["v"]
    name = sort.lstrip("-")
    if name == "created_at":
        if not isinstance(value, str):
            raise bad
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise bad from None
    elif name == "event_count":
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad
    elif value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise bad
    return value, run_id


# --- filtering, search, sort, pages -------------------------------------------------------


def search(runs: QuerySet, text: str) -> QuerySet:
    """Runs whose input or output contains every word of ``text`` (vendor's full-text search)."""
    words = text.split()
    if not words:
        return runs
    vendor = connection.vendor
    if vendor == "sqlite":
        # Each word quoted: FTS5's operators (NEAR, *, column filters) never come from outside.
        match = " ".join('"' + word.replace('"', '""') + '"' for word in words)
        return runs.filter(pk__in=RawSQL("SELECT rowid FROM streams_run_fts WHERE streams_run_fts MATCH %s",
                                         (match,)))
    if vendor == "postgresql":
        # The stored, GIN-indexed vector of input and output; a live run's of its input only (0013).
        where = ["streams_run.search_vector @@ plainto_tsquery('english'::regconfig, %s)"]
        # A word few runs contain: the planner, guessing it commoner, would walk the newest runs looking
        # for it (the whole table when none has it). Its matches are read from the index first, then
        # the list is narrowed to those ids; a common word keeps the plain plan, which finds a page fast.
        probe = Run.objects.extra(where=where, params=[text]).order_by().values_list("id", flat=True)
        matches = list(probe[: RARE_MATCHES + 1])
        if len(matches) <= RARE_MATCHES:
            return runs.filter(pk__in=matches)
        return runs.extra(where=where, params=[text])
    condition = Q()
    for word in words:
        condition &= Q(output_text__icontains=word) | Q(request__icontains=word)
    return runs.filter(condition)


def apply_filters(runs: QuerySet, query: RunQuery) -> QuerySet:
    """``runs`` narrowed by every filter of ``query`` (not sorted or paged)."""
    if query.status:
        runs = runs.filter(status__in=query.status)
    if query.model:
        runs = runs.filter(model=query.model)
    if query.provider:
        runs = runs.filter(provider=query.provider)
    if query.source:
        runs = runs.filter(source=query.source)
    if query.review_state:
        runs = runs.filter(review_state=query.review_state)
    if query.owner:
        runs = runs.filter(owner__username=query.owner)
    if query.flagged is not None:
        flagged = Q(pk__in=RunFlag.objects.values("run_id"))
        runs = runs.filter(flagged) if query.flagged else runs.exclude(flagged)
    if query.pinned is not None:
        runs = runs.filter(pinned=query.pinned)
    if query.pruned is not None:
        runs = runs.filter(events_pruned_at__isnull=not query.pruned)
    if query.since:
        runs = runs.filter(created_at__gte=query.since)
    if query.until:
        runs = runs.filter(created_at__lt=query.until)
    for name, (low, high) in query.ranges.items():
        if low is not None:
            runs = runs.filter(**{f"{name}__gte": low})
        if high is not None:
            runs = runs.filter(**{f"{name}__lte": high})
    if query.q:
        runs = search(runs, query.q)
    return runs


def ordered(runs: QuerySet, query: RunQuery) -> QuerySet:
    """Sorted by the query's field, nulls last either way, the id breaking ties in the same direction
    (for the older offset pages; :func:`page_of` reads keyset pages without sorting every run)."""
    name = query.sort_field
    if query.descending:
        return runs.order_by(F(name).desc(nulls_last=True), "-id")
    return runs.order_by(F(name).asc(nulls_last=True), "id")


def _beyond(name: str, descending: bool, value: Any, last_id: int) -> Q:
    """Rows after (value, last_id) in (name, id) order, written so an index on (name, id) serves it:
    a range on ``name`` first, then the tie broken by the id."""
    op = "lt" if descending else "gt"
    return Q(**{f"{name}__{op}e": value}) & (Q(**{f"{name}__{op}": value}) | Q(**{f"id__{op}": last_id}))


def page_of(runs: QuerySet, query: RunQuery) -> tuple[list[Any], str | None]:
    """One page of ``runs`` (already filtered) and the cursor of the next page, or None.

    Keyset pagination in (field, id) order, the id breaking ties in the same direction. A figure
    that can be null is read in two parts, the known values first and then the nulls by id, so each
    part walks the (field, id) index in its own order and nulls come last whichever the direction
    (one ``ORDER BY ... NULLS LAST`` query would sort every matching run instead)."""
    name, descending = query.sort_field, query.descending
    field_order, id_order = (f"-{name}", "-id") if descending else (name, "id")
    want = query.limit + 1
    cursor = query.cursor
    rows: list[Any] = []
    if cursor is None or cursor[0] is not None:
        known = runs.order_by(field_order, id_order)
        if name in METRIC_COLUMNS:
            known = known.filter(**{f"{name}__isnull": False})
        if cursor is not None:
            known = known.filter(_beyond(name, descending, *cursor))
        rows = list(known[:want])
    if name in METRIC_COLUMNS and len(rows) < want:
        nulls = runs.filter(**{f"{name}__isnull": True}).order_by(id_order)
        if cursor is not None and cursor[0] is None:
            nulls = nulls.filter(**{f"id__{'lt' if descending else 'gt'}": cursor[1]})
        rows += list(nulls[: want - len(rows)])
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    next_cursor = None
    if more and rows:
        last = rows[-1]
        next_cursor = encode_cursor(query.sort, getattr(last, name), last.pk)
    return rows, next_cursor


def query_string(query: RunQuery, **changes: Any) -> str:
    """The URL query that reproduces ``query`` (with ``changes``), for links and the next page."""
    pairs: list[tuple[str, str]] = []
    values = {
        "q": query.q, "status": ",".join(query.status), "model": query.model, "provider": query.provider,
        "source": query.source, "review_state": query.review_state, "owner": query.owner,
        "flagged": _flag_text(query.flagged), "pinned": _flag_text(query.pinned), "pruned": _flag_text(query.pruned),
        "since": query.since.isoformat() if query.since else "",
        "until": query.until.isoformat() if query.until else "",
    }
    for name, (low, high) in query.ranges.items():
        values[f"{name}_min"] = "" if low is None else str(low)
        values[f"{name}_max"] = "" if high is None else str(high)
    values["sort"] = "" if query.sort == DEFAULT_SORT else query.sort
    values["limit"] = "" if query.limit == DEFAULT_LIMIT else str(query.limit)
    values.update(changes)
    for name, value in values.items():
        if value not in ("", None):
            pairs.append((name, str(value)))
    return urlencode(pairs)


def _flag_text(value: bool | None) -> str:
    return "" if value is None else ("1" if value else "0")
