"""The insights roll-up: ended runs summed per hour and per day, so insights over everyone's runs read
a few thousand rows instead of every run in the range (docs/metrics.md, "The roll-up").

Rows (:class:`~streams.models.RunRollup`) hold, per hour or day and per model (of a provider) or per
provider (every model), the count of ended runs, of each unhappy outcome and of flagged runs, and a
histogram of each insights figure over log-spaced bins :data:`RATIO` wide, so a percentile read from
the bins is within :data:`RELATIVE_ERROR` of the nearest-rank percentile of the runs themselves.

Keeping it right without a hook wherever runs end: database triggers (migration 0011) write a
:class:`~streams.models.RollupMark` whenever a run ends, an ended run changes what the roll-up reads
of it, is deleted, or gains or loses a flag. :func:`fold` recomputes each marked hour x model x
provider from its runs, rebuilds the provider and day rows above it, and deletes the marks it read,
all in one transaction. Readers (:func:`summarise`) never trust a row under a mark: those hours are
counted from the runs directly, as are runs still active and the partial hours at the range's ends.
So the answer is right whether or not a fold has run; folding only makes it fast.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from operator import add
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Q, QuerySet

from streams.models import ACTIVE_STATUSES, TERMINAL_STATUSES, RollupMark, Run, RunFlag, RunRollup, RunStatus

FIGURES = ("ttft_ms", "tokens_per_s", "duration_ms", "gap_p95_ms")
FRACTIONS = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99))
OUTCOMES = tuple(status.value for status in (RunStatus.FAILED, RunStatus.INCOMPLETE, RunStatus.CANCELLED,
                                             RunStatus.INTERRUPTED))
COUNTS = ("runs", *OUTCOMES, "flagged")

# Bin 0 holds values below LOWEST (0 included, read back as 0); bin i >= 1 holds
# [LOWEST * RATIO**(i-1), LOWEST * RATIO**i) and reads back as its geometric middle, so any value from
# LOWEST to HIGHEST comes back within sqrt(RATIO) - 1 of itself. Values above HIGHEST share the last bin.
RATIO = 1.02
LOWEST = 0.001
HIGHEST = 1e9
RELATIVE_ERROR = round(math.sqrt(RATIO) - 1, 4)  # 0.01
_LOG_RATIO = math.log(RATIO)
BINS = 2 + int(math.log(HIGHEST / LOWEST) / _LOG_RATIO)

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
FOLD_EVERY_S = 60  # the housekeeping loop's fold (streams/live/recovery.py)...
FOLD_BUDGET_S = 1.0  # ...for at most this long each time (it runs on the one database thread)
HOURS_PER_HOUSEKEEPING_ROUND = 2  # short transactions there: SQLite's recorders wait for each
MARKS_PER_FOLD = 20_000  # marks read per transaction of the fold...
HOURS_PER_FOLD = 12  # ...and hours recomputed in it (SQLite: writers wait for the transaction)
_IN_CHUNK = 500  # ids per IN (...) (SQLite's limit on parameters)
_LOCK_KEY = 0x5EED_0011  # PostgreSQL advisory lock: one fold at a time across processes


# --- histograms ----------------------------------------------------------------------------


def bin_of(value: float) -> int:
    if not value >= LOWEST:  # negatives, 0 and NaN
        return 0
    return min(BINS - 1, 1 + int(math.log(value / LOWEST) / _LOG_RATIO))


def value_of(index: int) -> float:
    """What a bin reads back as: 0 for bin 0, else the geometric middle of its range (6 digits)."""
    if index <= 0:
        return 0.0
    return float(f"{LOWEST * RATIO ** (index - 0.5):.6g}")


class Histogram:
    """Counts per bin over a contiguous span of bins starting at ``low`` (stored as text, see :meth:`text`)."""

    __slots__ = ("low", "counts")

    def __init__(self, low: int = 0, counts: list[int] | None = None) -> None:
        self.low = low
        self.counts = counts if counts is not None else []

    @classmethod
    def of(cls, values: Iterable[float]) -> Histogram:
        bins = sorted(bin_of(value) for value in values)
        if not bins:
            return cls()
        counts = [0] * (bins[-1] - bins[0] + 1)
        for index in bins:
            counts[index - bins[0]] += 1
        return cls(bins[0], counts)

    @classmethod
    def parse(cls, text: str) -> Histogram:
        """``"first bin:count,count,..."`` (empty: no values)."""
        if not text:
            return cls()
        low, _, counts = text.partition(":")
        return cls(int(low), list(map(int, counts.split(","))))

    def text(self) -> str:
        return f"{self.low}:{','.join(map(str, self.counts))}" if self.counts else ""

    def merge(self, other: Histogram) -> None:
        """Add ``other``'s counts to these, widening the span as needed."""
        if not other.counts:
            return
        if not self.counts:
            self.low, self.counts = other.low, list(other.counts)
            return
        if other.low < self.low:
            self.counts[0:0] = [0] * (self.low - other.low)
            self.low = other.low
        end = other.low + len(other.counts)
        if end > self.low + len(self.counts):
            self.counts.extend([0] * (end - self.low - len(self.counts)))
        start = other.low - self.low
        stop = start + len(other.counts)
        self.counts[start:stop] = map(add, self.counts[start:stop], other.counts)

    def summary(self) -> list[float | None]:
        """``[values, p50, p95, p99]``: nearest-rank percentiles (streams.protocol.metrics.percentile) read
        from the bins."""
        running = list(accumulate(self.counts))
        total = running[-1] if running else 0
        if not total:
            return [0, None, None, None]
        ranks = (max(1, math.ceil(fraction * total)) for _, fraction in FRACTIONS)
        return [total, *(value_of(self.low + bisect_left(running, rank)) for rank in ranks)]


@dataclass
class Tally:
    """Counts and histograms of some runs or rows, summed."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))
    histograms: dict[str, Histogram] = field(default_factory=lambda: {figure: Histogram() for figure in FIGURES})

    def add_counts(self, counts: dict[str, int]) -> None:
        for name in COUNTS:
            self.counts[name] += counts[name]

    def add_histograms(self, texts: dict[str, str]) -> None:
        for figure in FIGURES:
            self.histograms[figure].merge(Histogram.parse(texts.get(figure, "")))

    def summaries(self) -> dict[str, list[float | None]]:
        return {figure: self.histograms[figure].summary() for figure in FIGURES}


def _tally_runs(rows: Iterable[dict[str, Any]]) -> Tally:
    """A Tally of runs read by :func:`_run_values`."""
    tally = Tally()
    values: dict[str, list[float]] = {figure: [] for figure in FIGURES}
    for row in rows:
        tally.counts["runs"] += 1
        if row["status"] in tally.counts:
            tally.counts[row["status"]] += 1
        tally.counts["flagged"] += bool(row["is_flagged"])
        for figure in FIGURES:
            if row[figure] is not None:
                values[figure].append(row[figure])
    tally.histograms = {figure: Histogram.of(values[figure]) for figure in FIGURES}
    return tally


def _run_values(runs: QuerySet) -> Iterator[dict[str, Any]]:
    flagged = Exists(RunFlag.objects.filter(run_id=OuterRef("pk")))
    rows = runs.annotate(is_flagged=flagged).order_by().values("created_at", "model", "provider", "status",
                                                                 "is_flagged", *FIGURES)
    return rows.iterator(chunk_size=5000)


# --- time -------------------------------------------------------------------------------------


def _aware(value: datetime) -> datetime:
    if value.tzinfo is UTC:  # what the database gives (TIME_ZONE is UTC)
        return value
    return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)


def hour_of(value: datetime) -> datetime:
    return _aware(value).replace(minute=0, second=0, microsecond=0)


def day_of(value: datetime) -> datetime:
    return hour_of(value).replace(hour=0)


def _ranges(starts: Iterable[datetime], step: timedelta) -> list[tuple[datetime, datetime]]:
    """Sorted starts of equal steps as contiguous [start, end) ranges."""
    ranges: list[list[datetime]] = []
    for start in sorted(set(starts)):
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = start + step
        else:
            ranges.append([start, start + step])
    return [(a, b) for a, b in ranges]


def _within(field_name: str, ranges: list[tuple[datetime, datetime]]) -> Q:
    condition = Q(pk__in=[])
    for start, end in ranges:
        condition |= Q(**{f"{field_name}__gte": start, f"{field_name}__lt": end})
    return condition


def _chunks(items: list[Any], size: int = _IN_CHUNK) -> Iterator[list[Any]]:
    for index in range(0, len(items), size):
        yield items[index:index + size]


# --- the fold ---------------------------------------------------------------------------------

Cell = tuple[datetime, str, str]  # (hour, model, provider)


def fold(*, marks_per_round: int = MARKS_PER_FOLD, hours_per_round: int = HOURS_PER_FOLD,
         budget_s: float | None = None) -> int:
    """Bring the roll-up up to date with the marks; returns how many hour x model x provider cells were
    recomputed. Each round (at most ``hours_per_round`` hours, so a first fold over a large history holds
    neither a long transaction nor every run in memory) is one transaction; a round that finds another
    process folding stops, and so does the fold once ``budget_s`` has passed (the rest waits for the next)."""
    recomputed = 0
    deadline = None if budget_s is None else time.monotonic() + budget_s
    while deadline is None or time.monotonic() < deadline:
        with transaction.atomic():
            if not _fold_lock():
                return recomputed
            marks = list(RollupMark.objects.order_by("id").values_list("id", "created_at", "model", "provider")
                         [:marks_per_round])
            if not marks:
                return recomputed
            hours = sorted({hour_of(created) for _, created, _, _ in marks})[:hours_per_round]
            taken = [mark for mark in marks if hour_of(mark[1]) <= hours[-1]]
            cells = {(hour_of(created), model, provider) for _, created, model, provider in taken}
            _recompute(cells)
            for ids in _chunks([mark_id for mark_id, *_ in taken]):
                RollupMark.objects.filter(id__in=ids).delete()
        recomputed += len(cells)
        if len(taken) == len(marks) < marks_per_round:
            return recomputed
    return recomputed


def fold_a_while() -> int:
    """The housekeeping loop's fold: at most :data:`FOLD_BUDGET_S` of it, so the first fold over a long
    history (42 s at a million runs) does not hold up the loop's recovery sweeps, nor the live runs'
    writes that share the database thread (and, on SQLite, wait for each round's transaction) for
    more than about a second a minute; it goes on next time."""
    return fold(budget_s=FOLD_BUDGET_S, hours_per_round=HOURS_PER_HOUSEKEEPING_ROUND)


def _fold_lock() -> bool:
    """One fold at a time on PostgreSQL (held until the transaction ends). SQLite has one writer anyway."""
    if connection.vendor != "postgresql":
        return True
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_xact_lock(%s)", [_LOCK_KEY])
        return bool(cursor.fetchone()[0])


def _recompute(cells: set[Cell]) -> None:
    """Rewrite the hour rows of ``cells`` from their ended runs, then every row summed from them."""
    hours = sorted({hour for hour, _, _ in cells})
    grouped: dict[Cell, list[dict[str, Any]]] = {cell: [] for cell in cells}
    ended = Run.objects.filter(_within("created_at", _ranges(hours, HOUR)), status__in=TERMINAL_STATUSES)
    for row in _run_values(ended):
        cell = (hour_of(row["created_at"]), row["model"], row["provider"])
        if cell in grouped:
            grouped[cell].append(row)
    _replace("hour", False, {cell: _tally_runs(rows) for cell, rows in grouped.items()})

    providers_hours = {(hour, provider) for hour, _, provider in cells}
    _replace("hour", True, _sum_rows(RunRollup.objects.filter(span="hour", every_model=False, start__in=hours),
                                     lambda row: (row["start"], "", row["provider"]),
                                     {(hour, "", provider) for hour, provider in providers_hours}))
    days = sorted({day_of(hour) for hour in hours})
    in_days = RunRollup.objects.filter(_within("start", _ranges(days, DAY)), span="hour", every_model=False)
    _replace("day", False, _sum_rows(in_days, lambda row: (day_of(row["start"]), row["model"], row["provider"]),
                                     {(day_of(hour), model, provider) for hour, model, provider in cells}))
    _replace("day", True, _sum_rows(RunRollup.objects.filter(span="day", every_model=False, start__in=days),
                                    lambda row: (row["start"], "", row["provider"]),
                                    {(day_of(hour), "", provider) for hour, provider in providers_hours}))


def _sum_rows(rows: QuerySet, key: Any, wanted: set[Cell]) -> dict[Cell, Tally]:
    """Tallies of ``rows`` summed per ``key(row)``, for the keys in ``wanted`` (each present, empty or not)."""
    tallies = {cell: Tally() for cell in wanted}
    for row in rows.values("start", "model", "provider", "histograms", *COUNTS).iterator(chunk_size=2000):
        tally = tallies.get(key(row))
        if tally is not None:
            tally.add_counts(row)
            tally.add_histograms(row["histograms"])
    return tallies


def _replace(span: str, every_model: bool, tallies: dict[Cell, Tally]) -> None:
    """Delete the rows of these cells and write the non-empty ones anew."""
    if not tallies:
        return
    starts = sorted({start for start, _, _ in tallies})
    existing = RunRollup.objects.filter(span=span, every_model=every_model, start__in=starts)
    stale = [row_id for row_id, start, model, provider in existing.values_list("id", "start", "model", "provider")
             if (_aware(start), model, provider) in tallies]
    for ids in _chunks(stale):
        RunRollup.objects.filter(id__in=ids).delete()
    RunRollup.objects.bulk_create(
        [RunRollup(start=start, span=span, every_model=every_model, model=model, provider=provider,
                   figures=tally.summaries(),
                   histograms={figure: tally.histograms[figure].text() for figure in FIGURES}, **tally.counts)
         for (start, model, provider), tally in tallies.items() if tally.counts["runs"]],
        batch_size=500)


# --- reading ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Point:
    """One group or chart point being summed: stored rows (their histograms read only if needed) and
    runs counted directly."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    direct: list[dict[str, Any]] = field(default_factory=list)

    def needs_histograms(self) -> bool:
        return len(self.rows) > 1 or bool(self.rows and self.direct)

    def answer(self, histograms: dict[int, dict[str, str]]) -> dict[str, Any]:
        """Counts and ``figures`` ({figure: {"p50", "p95", "p99"}}): a row's own when the point is one row,
        else summed."""
        if len(self.rows) == 1 and not self.direct:
            row = self.rows[0]
            answer: dict[str, Any] = {name: row[name] for name in COUNTS}
            summaries = row["figures"]
        else:
            tally = _tally_runs(self.direct)
            for row in self.rows:
                tally.add_counts(row)
                tally.add_histograms(histograms[row["id"]])
            answer, summaries = tally.counts, tally.summaries()
        answer["figures"] = {figure: {"p50": summary[1], "p95": summary[2], "p99": summary[3]}
                             for figure, summary in summaries.items()}
        return answer


@dataclass
class Summary:
    """What :func:`summarise` answers: counts and ``figures`` ({figure: {"p50", "p95", "p99"}}) per
    (key, bucket start) and per key."""

    points: dict[tuple[str, datetime], dict[str, Any]]
    groups: dict[str, dict[str, Any]]


def summarise(runs: QuerySet, *, group_by: str, bucket: str, since: datetime, until: datetime,
              filters: dict[str, str]) -> Summary | None:
    """Insights over ``runs`` (which must be every run: the roll-up does not know owners) from the roll-up,
    or None when the range holds no whole hour (the direct query is quick then) or is filtered by
    something the rows do not record (the source)."""
    first, last = hour_of(since + HOUR - timedelta(microseconds=1)), hour_of(until)
    if last <= first or set(filters) - {"model", "provider"}:
        return None
    for _ in range(3):
        try:
            with _snapshot():
                return _summarise(runs, group_by, bucket, since, until, first, last, filters)
        except _Refolded:
            continue
    return None


class _Refolded(Exception):
    """A fold replaced rows this read had chosen before it read their histograms (SQLite: no snapshot)."""


@contextmanager
def _snapshot() -> Iterator[None]:
    """On PostgreSQL one REPEATABLE READ transaction for the whole read, so a fold committing meanwhile is
    seen entirely or not at all. SQLite's transactions here begin IMMEDIATE (a write lock: readers would
    hold up the recorders), so each statement reads on its own; the statements' order (marks, rows, then
    the runs) never counts a run twice, and rows replaced before their histograms are read start the read
    again (:class:`_Refolded`). Inside an outer transaction (tests) the outer one decides."""
    if connection.vendor != "postgresql" or connection.in_atomic_block:
        yield
        return
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        yield


def _summarise(runs: QuerySet, group_by: str, bucket: str, since: datetime, until: datetime, first: datetime,
               last: datetime, filters: dict[str, str]) -> Summary:
    dirty = _dirty_cells(first, last, filters)
    dirty_hours = {hour for hour, _, _ in dirty}
    every_model = group_by == "provider" and "model" not in filters
    day_plan = _rows_for("day", first, last, dirty_hours, dirty, every_model, filters)
    hour_plan = day_plan if bucket == "day" else _rows_for("hour", first, last, dirty_hours, dirty, every_model,
                                                           filters)
    direct = _direct_runs(runs, since, until, first, last, dirty, filters)
    points: dict[tuple[str, datetime], Point] = {}
    for row in hour_plan:  # hour rows start on their hour already
        _point(points, (row[group_by], day_of(row["start"]) if bucket == "day" else row["start"])).rows.append(row)
    groups: dict[str, Point] = {}
    for row in day_plan:
        _point(groups, row[group_by]).rows.append(row)
    bucket_of = day_of if bucket == "day" else hour_of
    for run in direct:
        _point(points, (run[group_by], bucket_of(run["created_at"]))).direct.append(run)
        _point(groups, run[group_by]).direct.append(run)
    needed = [row["id"] for point in (*points.values(), *groups.values()) if point.needs_histograms()
              for row in point.rows]
    histograms: dict[int, dict[str, str]] = {}
    for ids in _chunks(sorted(set(needed)), 2000 if connection.vendor == "postgresql" else _IN_CHUNK):
        histograms.update(RunRollup.objects.filter(id__in=ids).values_list("id", "histograms"))
    if len(histograms) < len(set(needed)):
        raise _Refolded
    return Summary(points={key: point.answer(histograms) for key, point in points.items()},
                   groups={key: point.answer(histograms) for key, point in groups.items()})


def _point(points: dict[Any, Point], key: Any) -> Point:
    point = points.get(key)
    if point is None:
        point = points[key] = Point()
    return point


def _dirty_cells(first: datetime, last: datetime, filters: dict[str, str]) -> set[Cell]:
    marks = RollupMark.objects.filter(created_at__gte=first, created_at__lt=last, **filters)
    return {(hour_of(created), model, provider) for created, model, provider
            in marks.values_list("created_at", "model", "provider")}


def _direct_runs(runs: QuerySet, since: datetime, until: datetime, first: datetime, last: datetime,
                 dirty: set[Cell], filters: dict[str, str]) -> list[dict[str, Any]]:
    """Runs the rows do not hold: in the partial hours at either end, still active, or in a marked cell."""
    condition = (Q(created_at__gte=since, created_at__lt=first) | Q(created_at__gte=last, created_at__lt=until)
                 | Q(created_at__gte=first, created_at__lt=last, status__in=ACTIVE_STATUSES))
    marked = _ranges((hour for hour, _, _ in dirty), HOUR)
    if marked:
        condition |= _within("created_at", marked) & Q(status__in=TERMINAL_STATUSES)
    kept = []
    for run in _run_values(runs.filter(condition, **filters)):
        created = run["created_at"]
        inside = first <= _aware(created) < last and run["status"] in TERMINAL_STATUSES
        if not inside or (hour_of(created), run["model"], run["provider"]) in dirty:
            kept.append(run)
    return kept


def _rows_for(span: str, first: datetime, last: datetime, dirty_hours: set[datetime], dirty: set[Cell],
              every_model: bool, filters: dict[str, str]) -> list[dict[str, Any]]:
    """Stored rows covering [first, last) with nothing under a mark: day rows for whole clean days (when
    ``span`` is day), hour rows at the wanted level for the other clean hours, and for a marked hour the
    model rows of its unmarked models (the marked ones are counted from their runs)."""
    fields = ("id", "start", "model", "provider", "figures", *COUNTS)
    level = RunRollup.objects.filter(every_model=every_model, **filters)
    rows: list[dict[str, Any]] = []
    hours = [first + HOUR * n for n in range(int((last - first) / HOUR))]
    covered: set[datetime] = set()
    if span == "day":
        dirty_days = {day_of(hour) for hour in dirty_hours}
        days = [day for day in _whole_days(first, last) if day not in dirty_days]
        if days:
            rows += level.filter(span="day", start__in=days).values(*fields)
            covered = {day + HOUR * n for day in days for n in range(24)}
    clean = [hour for hour in hours if hour not in covered and hour not in dirty_hours]
    for ranges in _chunks(_ranges(clean, HOUR), 200):
        rows += level.filter(_within("start", ranges), span="hour").values(*fields)
    if dirty_hours:
        model_rows = RunRollup.objects.filter(span="hour", every_model=False, start__in=sorted(dirty_hours),
                                              **filters)
        rows += [row for row in model_rows.values(*fields)
                 if (_aware(row["start"]), row["model"], row["provider"]) not in dirty]
    for row in rows:
        row["start"] = _aware(row["start"])
    return rows


def _whole_days(first: datetime, last: datetime) -> list[datetime]:
    day = day_of(first) if first == day_of(first) else day_of(first) + DAY
    days = []
    while day + DAY <= last:
        days.append(day)
        day += DAY
    return days


def mark_everything() -> int:
    """Drop the roll-up and mark every hour x model x provider that holds an ended run (a rebuild; the
    migration does the same once). Returns how many were marked."""
    with transaction.atomic():
        RunRollup.objects.all().delete()
        ended = Run.objects.filter(status__in=TERMINAL_STATUSES).order_by()
        cells = {(hour_of(created), model, provider)
                 for created, model, provider in ended.values_list("created_at", "model", "provider")
                 .iterator(chunk_size=10_000)}
        RollupMark.objects.bulk_create([RollupMark(created_at=hour, model=model, provider=provider)
                                        for hour, model, provider in cells], batch_size=1000)
    return len(cells)
