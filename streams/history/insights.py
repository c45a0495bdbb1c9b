"""Insights: latency, throughput and outcome rates per model or provider, and how they move over time.

Computed over a queryset the caller passes in, which starts from ``Run.objects.visible_to``: a person
sees figures over the runs they may see, no more. Counts and rates are SQL aggregates over the
indexed columns; percentiles are nearest-rank (the rule of streams/protocol/metrics.py). On
PostgreSQL they are ``percentile_disc`` aggregates (the same rule, in the database); elsewhere the
group's sorted column values are fetched and ranked in Python. Over more than ``SAMPLE_ABOVE`` runs
the percentiles are ranked over a sample by id; counts and rates always cover every run
(docs/metrics.md, "Insights"). For callers who see every run the figures come from the roll-up
(streams/history/rollup.py): counts exact, percentiles within ``rollup.RELATIVE_ERROR``.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from itertools import groupby
from typing import Any
from urllib.parse import urlencode

from django.contrib.postgres.fields import ArrayField
from django.db import connection
from django.db.models import Aggregate, Count, F, FloatField, Q, QuerySet
from django.db.models.functions import TruncDay, TruncHour

from streams.history import rollup
from streams.history.fleet import BadQuery, parse_time
from streams.history.rollup import FIGURES, FRACTIONS
from streams.models import RunFlag, RunSource, RunStatus
from streams.protocol.metrics import percentile

GROUP_BY = ("model", "provider")
BUCKETS = {"hour": (TruncHour, timedelta(hours=1)), "day": (TruncDay, timedelta(days=1))}
RATES = {f"{status}_rate": status for status in rollup.OUTCOMES}  # failed_rate: the share of failed runs, ...
PARAMS = frozenset({"group_by", "since", "until", "bucket", "model", "provider", "source"})
DEFAULT_RANGE = timedelta(days=7)
MAX_BUCKETS = 24 * 92  # an hourly series over three months at most
SAMPLE_ABOVE = 100_000  # runs in range beyond which percentiles come from a sample (docs/metrics.md)
SAMPLE_EVERY = 16  # the sample: runs whose id is a multiple of this (a partial index holds them, migration 0009)


class Percentiles(Aggregate):
    """PostgreSQL's ``percentile_disc(ARRAY[.5, .95, .99]) WITHIN GROUP (ORDER BY x)``: the nearest-rank
    percentiles of :data:`FRACTIONS` in one pass (nulls are left out, as in the Python path)."""

    function = "percentile_disc"
    template = "%(function)s(ARRAY[%(fractions)s]::float8[]) WITHIN GROUP (ORDER BY %(expressions)s)"

    def __init__(self, expression: str, **extra: Any) -> None:
        fractions = ", ".join(repr(float(fraction)) for _, fraction in FRACTIONS)
        super().__init__(expression, fractions=fractions, output_field=ArrayField(FloatField()), **extra)


def parse_params(params: Mapping[str, str]) -> dict[str, Any]:
    """The insight request's options, or BadQuery naming the parameter."""
    unknown = sorted(set(params) - PARAMS)
    if unknown:
        raise BadQuery(unknown[0], f"unknown parameter{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)} "
                                   f"(accepted: {', '.join(sorted(PARAMS))})")
    group_by = params.get("group_by", "").strip() or "model"
    if group_by not in GROUP_BY:
        raise BadQuery("group_by", f"group_by must be model or provider; got {group_by[:40]!r}")
    bucket = params.get("bucket", "").strip() or "day"
    if bucket not in BUCKETS:
        raise BadQuery("bucket", f"bucket must be hour or day; got {bucket[:40]!r}")
    now = datetime.now(UTC)
    until = parse_time(params["until"], "until", now) if params.get("until", "").strip() else now
    since = parse_time(params["since"], "since", now) if params.get("since", "").strip() else until - DEFAULT_RANGE
    if since >= until:
        raise BadQuery("since", "since must be before until")
    if (until - since) / BUCKETS[bucket][1] > MAX_BUCKETS:
        raise BadQuery("bucket", f"that range holds more than {MAX_BUCKETS} {bucket}s; choose bucket=day or a "
                                 "shorter range")
    source = params.get("source", "").strip()
    if source and source not in RunSource.values:
        raise BadQuery("source", f"source must be one of {', '.join(RunSource.values)}")
    filters = {name: params[name].strip()[:200] for name in ("model", "provider") if params.get(name, "").strip()}
    if source:
        filters["source"] = source
    return {"group_by": group_by, "bucket": bucket, "since": since, "until": until, "filters": filters}


def insights(runs: QuerySet, *, group_by: str, bucket: str, since: datetime, until: datetime,
             filters: Mapping[str, str], list_url: str = "/runs/", every_run: bool = False) -> dict[str, Any]:
    """``{"groups": [...], "series": [...]}`` over ``runs`` created in [since, until).

    ``every_run``: ``runs`` is every run (the caller sees them all), so the roll-up may answer
    (streams/history/rollup.py); a person who sees only their own runs gets the direct query."""
    summary = None
    if every_run:
        summary = rollup.summarise(runs, group_by=group_by, bucket=bucket, since=since, until=until,
                                   filters=dict(filters))
    if summary is not None:
        points, totals = summary.points, summary.groups
        every, error = 1, rollup.RELATIVE_ERROR
    else:
        points, totals, every = _direct(runs, group_by=group_by, bucket=bucket, since=since, until=until,
                                        filters=filters)
        error = 0

    keys: dict[str, str] = {}

    def link(key: str, start: datetime, end: datetime) -> str:
        # Thousands of points on an hourly chart: the key's part is encoded once, the times by hand
        # (an ISO time needs only ":" and "+" escaped), as urlencode would.
        if key not in keys:
            keys[key] = urlencode({group_by: key, **{k: v for k, v in filters.items() if k != group_by}})
        return f"{list_url}?{keys[key]}&since={_quoted_time(start)}&until={_quoted_time(end)}&all=1"

    step = BUCKETS[bucket][1]
    series: dict[str, list[dict[str, Any]]] = {}
    for (key, start), values in sorted(points.items()):
        point: dict[str, Any] = {"t": start.isoformat(), "runs": values["runs"],
                                 "failed_rate": _rate(values, RunStatus.FAILED)}
        for figure in FIGURES:
            point[figure] = values["figures"][figure]
        point["runs_url"] = link(key, max(start, since), min(start + step, until))
        series.setdefault(key, []).append(point)
    groups = []
    for key, values in sorted(totals.items(), key=lambda item: (-item[1]["runs"], item[0])):
        entry: dict[str, Any] = {"key": key, "runs": values["runs"]}
        for figure in FIGURES:
            entry[figure] = values["figures"][figure]
        for name, status in RATES.items():
            entry[name] = _rate(values, status)
        entry["flagged_rate"] = _rate(values, "flagged")
        entry["runs_url"] = link(key, since, until)
        groups.append(entry)
    return {
        "group_by": group_by, "bucket": bucket, "since": since.isoformat(), "until": until.isoformat(),
        "percentiles_sampled_every": every,
        "percentiles_within": error,
        "rolled_up": summary is not None,
        "groups": groups,
        "series": [{"key": key, "points": points} for key, points in series.items()],
    }


def _rate(values: Mapping[str, Any], name: str) -> float | None:
    return round(values[name] / values["runs"], 4) if values["runs"] else None


def _quoted_time(value: datetime) -> str:
    return value.isoformat().replace(":", "%3A").replace("+", "%2B")


def _direct(runs: QuerySet, *, group_by: str, bucket: str, since: datetime, until: datetime,
            filters: Mapping[str, str]) -> tuple[dict, dict, int]:
    """Counts and percentiles straight from the runs: (points by (key, bucket start), totals by key,
    the sampling step of the percentiles)."""
    runs = runs.filter(created_at__gte=since, created_at__lt=until, **filters).order_by()
    counts = {status: Count("pk", filter=Q(status=status)) for status in RATES.values()}
    counts["flagged"] = Count("pk", filter=Q(pk__in=RunFlag.objects.values("run_id")))

    # Counts per (key, bucket) in one scan; a group's counts are the sums of its buckets'.
    trunc = BUCKETS[bucket][0]
    bucketed = runs.annotate(bucket=trunc("created_at", tzinfo=UTC))
    point_rows = list(bucketed.values(group_by, "bucket").annotate(runs=Count("pk"), **counts)
                      .order_by(group_by, "bucket"))
    total = sum(row["runs"] for row in point_rows)
    # Percentiles sort every value they rank: above SAMPLE_ABOVE runs they are taken over one run in
    # SAMPLE_EVERY (by id, so the same runs each time), read from a partial index of just those runs.
    every = SAMPLE_EVERY if total > SAMPLE_ABOVE else 1
    ranked = runs if every == 1 else runs.annotate(_sample=F("id") % every).filter(_sample=0)
    group_ranks = _ranks(ranked, [group_by])
    point_ranks = _ranks(ranked.annotate(bucket=trunc("created_at", tzinfo=UTC)), [group_by, "bucket"])

    names = ("runs", *counts)
    points: dict[tuple[str, datetime], dict[str, Any]] = {}
    totals: dict[str, dict[str, Any]] = {}
    for row in point_rows:
        key = row[group_by]
        summed = totals.setdefault(key, dict.fromkeys(names, 0))
        for name in names:
            summed[name] += row[name]
        points[(key, _aware(row["bucket"]))] = {
            **{name: row[name] for name in names},
            "figures": {figure: point_ranks[figure].get((key, row["bucket"]), _empty()) for figure in FIGURES}}
    for key, summed in totals.items():
        summed["figures"] = {figure: group_ranks[figure].get((key,), _empty()) for figure in FIGURES}
    return points, totals, every


def _ranks(runs: QuerySet, keys: list[str]) -> dict[str, dict[tuple, dict[str, float | None]]]:
    """figure → group key tuple → {"p50", "p95", "p99"} over the runs where the figure is known."""
    if connection.vendor != "postgresql":
        return _percentiles(runs, keys)
    aggregates = {f"_{figure}": Percentiles(figure) for figure in FIGURES}
    result: dict[str, dict[tuple, dict[str, float | None]]] = {figure: {} for figure in FIGURES}
    for row in runs.values(*keys).annotate(**aggregates).order_by():
        for figure in FIGURES:
            result[figure][tuple(row[k] for k in keys)] = _named(row[f"_{figure}"])
    return result


def _percentiles(runs: QuerySet, keys: list[str]) -> dict[str, dict[tuple, dict[str, float | None]]]:
    """figure → group key tuple → {"p50", "p95", "p99"} over the runs where the figure is known, for
    databases without ``percentile_disc``: each group's values fetched sorted, ranked here."""
    result: dict[str, dict[tuple, dict[str, float | None]]] = {}
    for figure in FIGURES:
        known = runs.filter(**{f"{figure}__isnull": False})
        by_group: dict[tuple, dict[str, float | None]] = {}
        rows = known.values_list(*keys, figure).order_by(*keys, figure)
        for group, items in groupby(rows.iterator(chunk_size=5000), key=lambda r: r[: len(keys)]):
            values = [item[-1] for item in items]
            by_group[tuple(group)] = {name: percentile(values, fraction) for name, fraction in FRACTIONS}
        result[figure] = by_group
    return result


def _named(values: list[float | None] | None) -> dict[str, float | None]:
    """``percentile_disc``'s array as {"p50", "p95", "p99"} (None when the group had no value)."""
    if not values:
        return _empty()
    return {name: value for (name, _), value in zip(FRACTIONS, values, strict=True)}


def _empty() -> dict[str, None]:
    return {name: None for name, _ in FRACTIONS}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)
