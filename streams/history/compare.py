"""Comparing runs: the figures, series and word diff the compare view and ``/api/compare/`` show.

Figures come from the stored events (the same :class:`~streams.protocol.metrics.MetricsAccumulator` the
runner uses), so a run still streaming is compared on what it has sent so far. Cumulative output
tokens count one per token delta and are scaled to the terminal event's ``usage.output_tokens``
when there is one, so each line ends at the real count.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.models import TERMINAL_STATUSES, Event, Run, RunGroup
from streams.protocol.metrics import TERMINAL_TYPES, MetricsAccumulator, is_token_delta
from streams.protocol.values import BadValue, parse_id

MAX_RUNS = 4
MAX_SERIES_POINTS = 400
# Word diffs beyond this many tokens per side fall back to whole lines (difflib is quadratic).
MAX_DIFF_TOKENS = 20_000
METRIC_KEYS = ("ttfe_ms", "ttft_ms", "duration_ms", "events", "output_tokens", "tokens_per_s",
               "gap_p50_ms", "gap_p95_ms", "gap_max_ms")
TIMING_KEYS = ("ttfe_ms", "ttft_ms", "duration_ms", "tokens_per_s", "gap_p50_ms", "gap_p95_ms", "gap_max_ms")

_WORDS = re.compile(r"\s+|[^\s]+")


class BadCompareRequest(ValueError):
    """The runs asked for cannot be compared as asked; the message says why."""


def parse_run_ids(values: Sequence[str]) -> list[int]:
    """``?runs=1,2&runs=3`` → ``[1, 2, 3]``: 1..4 distinct positive ids, in the order given."""
    ids: list[int] = []
    for value in values:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                run_id = parse_id(part, "run id")
            except BadValue as exc:
                raise BadCompareRequest(str(exc)) from None
            if run_id not in ids:
                ids.append(run_id)
    if not ids:
        raise BadCompareRequest("name the runs to compare: ?runs=<id>,<id>")
    if len(ids) > MAX_RUNS:
        raise BadCompareRequest(f"compare at most {MAX_RUNS} runs at once; got {len(ids)}")
    return ids


@dataclass
class RunFigures:
    """What one run's events add up to, for the compare view."""

    metrics: dict[str, Any]
    token_times: list[float] = field(default_factory=list)
    usage_tokens: int | None = None

    def cumulative_tokens(self, max_points: int = MAX_SERIES_POINTS) -> list[list[float]]:
        return cumulative_tokens(self.token_times, self.usage_tokens, max_points)


def figures_from_events(events: Iterable[tuple[float, str, str]]) -> RunFigures:
    """Metrics and token-delta times of ``(t, type, data)`` rows in seq order."""
    accumulator = MetricsAccumulator()
    token_times: list[float] = []
    for t, event_type, data in events:
        payload = None
        if event_type in TERMINAL_TYPES:
            try:
                payload = json.loads(data)
            except ValueError:
                payload = None
        accumulator.observe_payload(t, event_type, payload, len(data))
        if is_token_delta(event_type):
            token_times.append(t)
    usage = accumulator.usage.get("output_tokens") if accumulator.usage else None
    return RunFigures(accumulator.snapshot(), token_times, usage if isinstance(usage, int) else None)


def cumulative_tokens(token_times: Sequence[float], usage_tokens: int | None = None,
                      max_points: int = MAX_SERIES_POINTS) -> list[list[float]]:
    """``[[t, tokens so far], ...]`` from t=0, at most ``max_points`` points, ending at the total.

    One token per delta, scaled so the last point is ``usage_tokens`` when the run reported it.
    """
    n = len(token_times)
    if not n:
        return [[0.0, 0.0]]
    scale = usage_tokens / n if usage_tokens else 1.0
    points = [[0.0, 0.0], [round(token_times[0], 3), 0.0]]
    budget = max(2, max_points - 2)
    stride = max(1, -(-n // budget))  # ceil(n / budget)
    indexes = list(range(stride - 1, n, stride))
    if indexes[-1] != n - 1:
        indexes.append(n - 1)
    for i in indexes:
        points.append([round(token_times[i], 3), round((i + 1) * scale, 2)])
    return points


def run_metrics(computed: dict[str, Any], stored: dict[str, Any], *, finished: bool, timed: bool) -> dict[str, Any]:
    """The figures to compare: a finished run's own stored metrics (what its run page shows, e.g.
    the runner's duration to the end of the stream) where it has them, else those computed from
    its events. Runs without timings have no timing figures."""
    metrics = dict(computed)
    if finished:
        keys = (*METRIC_KEYS, "output_tokens_estimated")
        metrics.update({key: stored[key] for key in keys if stored.get(key) is not None})
    if not timed:
        metrics.update({key: stored.get(key) for key in TIMING_KEYS})
    return metrics


def delta_to_first(values: list[Any]) -> list[Any]:
    """Each value minus the first (None where either is missing); the first run's is None."""
    base = values[0] if values else None
    out: list[Any] = [None]
    for value in values[1:]:
        if isinstance(base, (int, float)) and isinstance(value, (int, float)) and not isinstance(value, bool):
            out.append(round(value - base, 2))
        else:
            out.append(None)
    return out


def word_diff(old: str, new: str) -> dict[str, Any]:
    """Word-level diff of two texts: ``ops`` of ``["equal"|"delete"|"insert", text]`` and a ratio."""
    a, b = _WORDS.findall(old), _WORDS.findall(new)
    unit = "word"
    if len(a) > MAX_DIFF_TOKENS or len(b) > MAX_DIFF_TOKENS:
        a, b, unit = old.splitlines(keepends=True), new.splitlines(keepends=True), "line"
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    ops: list[list[str]] = []

    def emit(op: str, tokens: Sequence[str]) -> None:
        text = "".join(tokens)
        if not text:
            return
        if ops and ops[-1][0] == op:
            ops[-1][1] += text
        else:
            ops.append([op, text])

    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            emit("equal", a[i1:i2])
        else:
            emit("delete", a[i1:i2])
            emit("insert", b[j1:j2])
    return {"ops": ops, "similarity": round(matcher.ratio(), 4), "unit": unit}


def run_label(run: Run) -> str:
    membership = getattr(run, "group_membership", None)
    if membership is not None and membership.label:
        return membership.label
    return run.model if run.provider.startswith("simulator") else f"{run.provider} · {run.model}"


def compare_runs(runs: Sequence[Run], events_by_run: dict[int, Iterable[tuple[float, str, str]]]) -> dict[str, Any]:
    """The compare payload for ``runs`` (the first is the baseline) given each run's event rows."""
    entries = []
    for run in runs:
        figures = figures_from_events(events_by_run[run.pk])
        stored = run.metrics if isinstance(run.metrics, dict) else {}
        timed = stored.get("timed") is not False
        metrics = run_metrics(figures.metrics, stored, finished=run.status in TERMINAL_STATUSES, timed=timed)
        entries.append(
            {
                "id": run.pk,
                "label": run_label(run),
                "provider": run.provider,
                "model": run.model,
                "status": run.status,
                "imported": run.imported,
                "timed": timed,
                "input": run.input_text,
                "instructions": (run.request or {}).get("instructions", "") if isinstance(run.request, dict) else "",
                "temperature": (run.request or {}).get("temperature") if isinstance(run.request, dict) else None,
                "output_text": run.output_text,
                "metrics": {key: metrics.get(key) for key in METRIC_KEYS}
                | {"output_tokens_estimated": metrics.get("output_tokens_estimated")},
                "counts": metrics.get("counts", {}),
                "cumulative_tokens": figures.cumulative_tokens() if timed else [],
                "url": f"/runs/{run.pk}/",
                "replay_url": f"/runs/{run.pk}/replay/",
            }
        )
    for key in METRIC_KEYS:
        differences = delta_to_first([entry["metrics"][key] for entry in entries])
        for entry, difference in zip(entries, differences, strict=True):
            entry.setdefault("difference", {})[key] = difference
    types = sorted({t for entry in entries for t in entry["counts"]})
    base = entries[0]["output_text"] if entries else ""
    diffs = [{"base": entries[0]["id"], "other": entry["id"], **word_diff(base, entry["output_text"])}
             for entry in entries[1:]]
    return {"runs": entries, "metric_keys": list(METRIC_KEYS), "event_types": types, "diffs": diffs}


class RunNotFound(LookupError):
    """A run asked for does not exist or is not the caller's to see (the same answer for both)."""


def compare_ids(user: Any, runs_params: list[str], group_param: str = "") -> list[int]:
    """Run ids from ``?runs=`` (commas and/or repeats) or ``?group=``; raises the usual errors."""
    if group_param and not runs_params:
        try:
            group_id = parse_id(group_param, "group")
        except BadValue as exc:
            raise BadCompareRequest(str(exc)) from None
        group = RunGroup.objects.visible_to(user).filter(pk=group_id).first()
        if group is None:
            raise RunNotFound(f"no such group: {group_param} (or it is not yours)")
        return group.run_ids()
    return parse_run_ids(runs_params)


def visible_runs(user: Any, run_ids: Sequence[int]) -> list[Run]:
    """The runs, in the order asked, if every one is visible to ``user``; else :class:`RunNotFound`."""
    found = {run.pk: run for run in
             Run.objects.visible_to(user).filter(pk__in=run_ids).select_related("owner", "group_membership")}
    runs = []
    for run_id in run_ids:
        run = found.get(run_id)
        if run is None:
            raise RunNotFound(f"no such run: {run_id} (or it is not yours)")
        runs.append(run)
    return runs


def load_compare(user: Any, run_ids: Sequence[int]) -> dict[str, Any]:
    """:func:`compare_runs` of the runs ``user`` asked for, reading their events from the store."""

    runs = visible_runs(user, run_ids)
    rows = Event.objects.order_by("seq").values_list("t", "type", "data")
    events = {run.pk: rows.filter(run_id=run.pk).iterator(chunk_size=2000) for run in runs}
    return compare_runs(runs, events)
