"""Latency and throughput figures of one run, computed from its events as they arrive.

The same accumulator serves the live runner (fed one event at a time) and stored or imported
runs (fed from the database), so a run's metrics never depend on how it was recorded.

Every "time to first ..." is in milliseconds since the request was sent, and each is defined
once, in docs/metrics.md (and :data:`DEFINITIONS`, which the pages show as hover help):
``ttfb_ms`` (first byte of the body), ``ttfe_ms`` (first event), ``ttfc_ms`` (``response.created``),
``ttft_ms`` (first output-text delta), ``ttfr_ms`` (first reasoning delta), ``ttfa_ms`` (first
tool-call argument delta), ``ttfd_ms`` (first token delta of any kind) and ``duration_ms``.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Iterable
from typing import Any

TERMINAL_TYPES = frozenset({"response.completed", "response.failed", "response.incomplete"})
CHAT_CHUNK = "chat.completion.chunk"

OUTPUT_TEXT_TYPES = frozenset({"response.output_text.delta"})
REASONING_TYPES = frozenset({"response.reasoning_text.delta", "response.reasoning_summary_text.delta"})
TOOL_ARGUMENT_TYPES = frozenset({
    "response.function_call_arguments.delta",
    "response.custom_tool_call_input.delta",
    "response.mcp_call_arguments.delta",
})

# One sentence per figure: docs/metrics.md says the same at more length; the pages show these on hover.
DEFINITIONS: dict[str, str] = {
    "ttfb_ms": "Time to first byte: from sending the request to the first byte of the response body "
               "(runs recorded without it, e.g. imports: the first event).",
    "ttfe_ms": "Time to first event: from sending the request to the first complete server-sent event.",
    "ttfc_ms": "Time to response.created: from sending the request to the upstream's response.created event.",
    "ttft_ms": "Time to first token: from sending the request to the first output-text delta "
               "(response.output_text.delta, or a Chat Completions chunk with content). Reasoning and "
               "tool calls do not count.",
    "ttfr_ms": "Time to first reasoning: to the first reasoning text or reasoning summary delta.",
    "ttfa_ms": "Time to first tool-call arguments: to the first function, custom tool or MCP call "
               "argument delta.",
    "ttfd_ms": "Time to first delta of any kind (text, refusal, reasoning, arguments, code...).",
    "duration_ms": "Total: from sending the request to the run's end.",
    "tokens_per_s": "Output tokens divided by the time from the first to the last token delta of any kind.",
    "gap_p95_ms": "95th percentile of the gaps between consecutive token deltas (inter-token gap).",
    "events": "Server-sent events stored for the run.",
}

# The figures kept in indexed columns of Run as well (sorting, filtering, insights).
# The figures that are final once known and are Run columns: (key, MetricsAccumulator attribute). A live
# run's row carries them from the moment they are known (streams/live/recorder.py).
FIRST_FIGURES = (("ttfb_ms", "first_byte_ms"), ("ttfc_ms", "created_ms"), ("ttft_ms", "first_text_ms"),
                 ("ttfr_ms", "first_reasoning_ms"), ("ttfa_ms", "first_arguments_ms"))
COLUMN_KEYS = ("ttfb_ms", "ttfc_ms", "ttft_ms", "ttfr_ms", "ttfa_ms", "duration_ms", "tokens_per_s", "gap_p95_ms")


def is_token_delta(event_type: str) -> bool:
    """Deltas that carry model output: text, refusal, reasoning, arguments, code, input..."""
    return event_type.endswith(".delta") and not event_type.startswith("response.audio.delta")


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (None when empty)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


class MetricsAccumulator:
    """Feed events in seq order with :meth:`observe`; read figures with :meth:`snapshot`."""

    def __init__(self) -> None:
        self.first_byte_ms: float | None = None
        self.first_event_ms: float | None = None
        self.created_ms: float | None = None
        self.first_text_ms: float | None = None
        self.first_reasoning_ms: float | None = None
        self.first_arguments_ms: float | None = None
        self.first_token_ms: float | None = None
        self.last_event_ms: float | None = None
        self.last_token_ms: float | None = None
        self.event_count = 0
        self.delta_count = 0
        self.bytes_received = 0
        self.counts: Counter[str] = Counter()
        # 8 bytes a gap (a list of floats is ~32: a pointer and a float object), kept for the run's
        # life: 1,200 gaps at 20 tokens/s for a minute are 9.4 KiB instead of 37.5 (docs/performance.md).
        self.delta_gaps: array[float] = array("d")
        self.usage: dict[str, Any] | None = None
        self._stamped: set[str] = set()  # kinds whose first-time figure is set already

    def observe_bytes(self, t: float) -> None:
        """Body bytes arrived at ``t`` (the reader calls this per chunk; only the first counts)."""
        if self.first_byte_ms is None:
            self.first_byte_ms = t

    def observe(self, t: float, event_type: str, nbytes: int = 0, usage: dict | None = None,
                token: bool | None = None, kind: str | None = None) -> None:
        """One event. ``kind`` ("text", "reasoning", "arguments") says what a chat chunk carried;
        Responses events are classified by their type."""
        self.event_count += 1
        self.counts[event_type] += 1
        self.bytes_received += nbytes
        if self.first_event_ms is None:
            self.first_event_ms = t
            if self.first_byte_ms is None:
                self.first_byte_ms = t  # no reader told us earlier: the first event brought the first byte
        if self.created_ms is None and event_type == "response.created":
            self.created_ms = t
        # Once per event, so the type's classification is looked up rather than worked out.
        type_kind, type_token = _TRAITS.get(event_type) or _traits(event_type)
        if kind is None:
            kind = type_kind
        if kind is not None and kind not in self._stamped:
            self._stamp_first(kind, t)
        self.last_event_ms = t
        if type_token if token is None else token:
            self.delta_count += 1
            if self.first_token_ms is None:
                self.first_token_ms = t
            else:
                self.delta_gaps.append(t - self.last_token_ms)  # type: ignore[operator]
            self.last_token_ms = t
        if usage:
            self.usage = usage

    def observe_many(self, t: float, event_type: str, count: int, nbytes: int) -> None:
        """:meth:`observe` of ``count`` events of one type at the same ``t``, ``nbytes`` in all (the
        events of one network read): the same figures, without a call per event."""
        if count == 1:
            self.observe(t, event_type, nbytes)
            return
        if count < 1:
            return
        self.event_count += count
        self.counts[event_type] += count
        self.bytes_received += nbytes
        if self.first_event_ms is None:
            self.first_event_ms = t
            if self.first_byte_ms is None:
                self.first_byte_ms = t
        if self.created_ms is None and event_type == "response.created":
            self.created_ms = t
        kind, token = _TRAITS.get(event_type) or _traits(event_type)
        if kind is not None and kind not in self._stamped:
            self._stamp_first(kind, t)
        self.last_event_ms = t
        if token:
            self.delta_count += count
            gaps = self.delta_gaps
            if self.first_token_ms is None:
                self.first_token_ms = t
            else:
                gaps.append(t - self.last_token_ms)  # type: ignore[operator]
            gaps.frombytes(bytes(8 * (count - 1)))  # the others' gaps: t - t, 0.0 (all bits zero)
            self.last_token_ms = t

    def _stamp_first(self, kind: str, t: float) -> None:
        """The first event of each kind in ``kind`` (comma-separated) sets its time-to-first figure."""
        for first in kind.split(","):
            attribute = _FIRST_BY_KIND[first]
            if getattr(self, attribute) is None:
                setattr(self, attribute, t)
        self._stamped.add(kind)

    def observe_payload(self, t: float, event_type: str, payload: Any, nbytes: int = 0) -> None:
        """Like :meth:`observe`, picking usage out of a terminal event's response object."""
        if event_type not in TERMINAL_TYPES and event_type != CHAT_CHUNK:
            self.observe(t, event_type, nbytes)  # nearly every event: nothing in its payload counts
            return
        usage = None
        token = None
        kind = None
        if event_type in TERMINAL_TYPES and isinstance(payload, dict):
            response = payload.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                usage = response["usage"]
        elif event_type == CHAT_CHUNK and isinstance(payload, dict):
            # A chat chunk is a token when it carries content, a refusal or tool-call arguments.
            choices = payload.get("choices")
            choices = choices if isinstance(choices, list) else []  # another shape than the API's: no token
            token = any(_chat_delta_has_output(choice) for choice in choices)
            kind = ",".join(sorted({k for choice in choices for k in _chat_delta_kinds(choice)})) or None
            if isinstance(payload.get("usage"), dict):
                usage = {"output_tokens": payload["usage"].get("completion_tokens"), **payload["usage"]}
        self.observe(t, event_type, nbytes, usage, token, kind)

    @property
    def output_tokens(self) -> tuple[int, bool]:
        """(tokens, estimated): usage's output_tokens, else one token per delta event."""
        if self.usage and isinstance(self.usage.get("output_tokens"), int):
            return self.usage["output_tokens"], False
        return self.delta_count, True

    def snapshot(self, duration_ms: float | None = None, final: bool = True) -> dict[str, Any]:
        tokens, estimated = self.output_tokens
        duration = duration_ms if duration_ms is not None else self.last_event_ms
        tokens_per_s = None
        if self.first_token_ms is not None and self.last_token_ms is not None and tokens:
            span = (self.last_token_ms - self.first_token_ms) / 1000.0
            if span > 0:
                tokens_per_s = round(tokens / span, 2)
        figures: dict[str, Any] = {key: _round(getattr(self, attribute)) for key, attribute in FIRST_FIGURES}
        figures.update({
            "ttfe_ms": _round(self.first_event_ms),
            "ttfd_ms": _round(self.first_token_ms),
            "duration_ms": _round(duration),
            "events": self.event_count,
            "output_tokens": tokens,
            "output_tokens_estimated": estimated,
            "tokens_per_s": tokens_per_s,
            "bytes": self.bytes_received,
        })
        if final:
            gaps = sorted(self.delta_gaps)
            figures.update(
                {
                    "gap_p50_ms": _round(percentile(gaps, 0.50)),
                    "gap_p95_ms": _round(percentile(gaps, 0.95)),
                    "gap_max_ms": _round(gaps[-1] if gaps else None),
                    "counts": dict(self.counts),
                }
            )
        return figures


def compute_metrics(events: Iterable[tuple[float, str, Any, int]]) -> dict[str, Any]:
    """Metrics of stored events given as (t, type, payload, nbytes) tuples in seq order."""
    accumulator = MetricsAccumulator()
    for t, event_type, payload, nbytes in events:
        accumulator.observe_payload(t, event_type, payload, nbytes)
    return accumulator.snapshot()


def column_values(metrics: Any) -> dict[str, Any]:
    """The indexed columns of Run (:data:`COLUMN_KEYS`) from a metrics dict: numbers or None."""
    metrics = metrics if isinstance(metrics, dict) else {}
    values: dict[str, Any] = {}
    for key in COLUMN_KEYS:
        value = metrics.get(key)
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        values[key] = float(value) if ok else None
    return values


_FIRST_BY_KIND = {"text": "first_text_ms", "reasoning": "first_reasoning_ms", "arguments": "first_arguments_ms"}
_TRAITS: dict[str, tuple[str | None, bool]] = {}
_TRAITS_KEPT = 4096  # distinct types remembered; an upstream inventing more is classified each time


def _traits(event_type: str) -> tuple[str | None, bool]:
    """(kind of first-time figure it sets or None, whether it is a token delta) of an event type."""
    traits = _TRAITS.get(event_type)
    if traits is None:
        kind = None
        if event_type in OUTPUT_TEXT_TYPES:
            kind = "text"
        elif event_type in REASONING_TYPES:
            kind = "reasoning"
        elif event_type in TOOL_ARGUMENT_TYPES:
            kind = "arguments"
        traits = (kind, is_token_delta(event_type))
        if len(_TRAITS) < _TRAITS_KEPT:
            _TRAITS[event_type] = traits
    return traits


def _chat_delta_has_output(choice: Any) -> bool:
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        return False
    return bool(delta.get("content") or delta.get("refusal") or delta.get("tool_calls")
                or delta.get("reasoning_content") or delta.get("reasoning"))


def _chat_delta_kinds(choice: Any) -> set[str]:
    """What a chat chunk's delta carried: output text, reasoning (vLLM/DeepSeek style), tool arguments."""
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        return set()
    kinds = set()
    if isinstance(delta.get("content"), str) and delta["content"]:
        kinds.add("text")
    if delta.get("reasoning_content") or delta.get("reasoning"):
        kinds.add("reasoning")
    for call in delta.get("tool_calls") or []:
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict) and function.get("arguments"):
            kinds.add("arguments")
    return kinds


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
