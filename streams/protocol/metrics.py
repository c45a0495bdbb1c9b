"""Latency and throughput figures of one run, computed from its events as they arrive.

The same accumulator serves the live runner (fed one event at a time) and stored or imported
runs (fed from the database), so a run's metrics never depend on how it was recorded.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from typing import Any

TERMINAL_TYPES = frozenset({"response.completed", "response.failed", "response.incomplete"})
CHAT_CHUNK = "chat.completion.chunk"


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
        self.first_event_ms: float | None = None
        self.first_token_ms: float | None = None
        self.last_event_ms: float | None = None
        self.last_token_ms: float | None = None
        self.event_count = 0
        self.delta_count = 0
        self.bytes_received = 0
        self.counts: Counter[str] = Counter()
        self.delta_gaps: list[float] = []
        self.usage: dict[str, Any] | None = None

    def observe(self, t: float, event_type: str, nbytes: int = 0, usage: dict | None = None,
                token: bool | None = None) -> None:
        self.event_count += 1
        self.counts[event_type] += 1
        self.bytes_received += nbytes
        if self.first_event_ms is None:
            self.first_event_ms = t
        self.last_event_ms = t
        if is_token_delta(event_type) if token is None else token:
            self.delta_count += 1
            if self.first_token_ms is None:
                self.first_token_ms = t
            else:
                self.delta_gaps.append(t - self.last_token_ms)  # type: ignore[operator]
            self.last_token_ms = t
        if usage:
            self.usage = usage

    def observe_payload(self, t: float, event_type: str, payload: Any, nbytes: int = 0) -> None:
        """Like :meth:`observe`, picking usage out of a terminal event's response object."""
        usage = None
        token = None
        if event_type in TERMINAL_TYPES and isinstance(payload, dict):
            response = payload.get("response")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                usage = response["usage"]
        elif event_type == CHAT_CHUNK and isinstance(payload, dict):
            # A chat chunk is a token when it carries content, a refusal or tool-call arguments.
            token = any(_chat_delta_has_output(choice) for choice in payload.get("choices") or [])
            if isinstance(payload.get("usage"), dict):
                usage = {"output_tokens": payload["usage"].get("completion_tokens"), **payload["usage"]}
        self.observe(t, event_type, nbytes, usage, token)

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
        figures: dict[str, Any] = {
            "ttfe_ms": _round(self.first_event_ms),
            "ttft_ms": _round(self.first_token_ms),
            "duration_ms": _round(duration),
            "events": self.event_count,
            "output_tokens": tokens,
            "output_tokens_estimated": estimated,
            "tokens_per_s": tokens_per_s,
            "bytes": self.bytes_received,
        }
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


def _chat_delta_has_output(choice: Any) -> bool:
    delta = choice.get("delta") if isinstance(choice, dict) else None
    if not isinstance(delta, dict):
        return False
    return bool(delta.get("content") or delta.get("refusal") or delta.get("tool_calls"))


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
