"""The scenario catalogue (each scenario is a model id) and the pure entry points.

``build_events(model, body)`` returns the exact events the simulator streams for a request,
without HTTP, so importer and rebuild tests can use them. Same ``sim_seed`` (or, without one,
same model + instructions + input) ⇒ the same events, byte for byte, ids included.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from django.conf import settings

from simulator import scripts
from simulator.builders import ResponseBuilder, Step
from simulator.errors import HTTP_ERRORS, SimulatorError, invalid
from simulator.pacing import DEFAULT_WRITE_INTERVAL_S, Pacing
from simulator.request import SimRequest, parse_request

DEFAULT_SCENARIO = "sim-text"
# Deterministic timestamps for seeded requests: 2026-01-01T00:00:00Z plus a seeded offset.
SEEDED_EPOCH = 1_767_225_600

Script = Callable[[ResponseBuilder, int], Iterator[Step]]


@dataclass(frozen=True)
class Scenario:
    """One model id. ``outcome`` is what a client should observe: completed, incomplete,
    failed, http_error, dropped (connection cut mid-stream) or stalled (no byte for long)."""

    id: str
    description: str
    outcome: str
    script: Script | None = None
    http_status: int | None = None
    tokens: tuple[int, int] = (60, 140)
    # Chat Completions flavour: "text", "logprobs", "refusal", "tools", "failed" or None.
    chat: str | None = None
    # Defaults for timing/fault knobs when the request's metadata leaves them out.
    defaults: Mapping[str, float] = field(default_factory=dict)
    reasoning_echo: Mapping[str, Any] | None = None
    max_output_tokens: int | None = None

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "description": self.description,
            "outcome": self.outcome,
            "chat_completions": self.chat is not None,
        }


_REASONING = {"effort": "medium", "summary": "auto"}
SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "sim-text",
        "Plain text answer that quotes the prompt (the default).",
        "completed",
        scripts.text,
        chat="text",
    ),
    Scenario(
        "sim-text-multipart",
        "One message with three output_text content parts.",
        "completed",
        scripts.text_multipart,
        chat="text",
    ),
    Scenario(
        "sim-logprobs",
        "Text whose deltas carry logprobs (top_logprobs honoured).",
        "completed",
        scripts.logprobs,
        chat="logprobs",
    ),
    Scenario(
        "sim-refusal",
        "A refusal content part streamed with refusal deltas.",
        "completed",
        scripts.refusal,
        chat="refusal",
    ),
    Scenario(
        "sim-function-calls",
        "Parallel function calls (request tools or three built-ins), arguments streamed.",
        "completed",
        scripts.function_calls,
        chat="tools",
    ),
    Scenario(
        "sim-custom-tool",
        "A custom (freeform) tool call whose input is streamed.",
        "completed",
        scripts.custom_tool,
    ),
    Scenario(
        "sim-reasoning-summary",
        "Reasoning with three summary parts, then text.",
        "completed",
        scripts.reasoning_summary,
        reasoning_echo=_REASONING,
    ),
    Scenario(
        "sim-reasoning-text",
        "Raw reasoning_text deltas (open-weight style), then text.",
        "completed",
        scripts.reasoning_text,
        reasoning_echo={"effort": "medium"},
    ),
    Scenario(
        "sim-web-search",
        "Hidden reasoning, web search progress, text with url_citation annotations.",
        "completed",
        scripts.web_search,
        reasoning_echo={"effort": "medium"},
    ),
    Scenario(
        "sim-file-search",
        "File search progress, text with file_citation annotations added between deltas.",
        "completed",
        scripts.file_search,
    ),
    Scenario(
        "sim-code-interpreter",
        "Code interpreter: code deltas, interpreting, completed; then text.",
        "completed",
        scripts.code_interpreter,
    ),
    Scenario(
        "sim-image-generation",
        "Image generation with partial PNGs that get sharper; empty closing message.",
        "completed",
        scripts.image_generation,
    ),
    Scenario(
        "sim-mcp",
        "MCP list-tools (one server fails), one MCP call that succeeds, one that fails; then text.",
        "completed",
        scripts.mcp,
    ),
    Scenario(
        "sim-shell",
        "Hosted shell: commands streamed, then their stdout/stderr; then text.",
        "completed",
        scripts.shell,
    ),
    Scenario(
        "sim-compaction",
        "Context compaction (response.compaction.compacting), then text.",
        "completed",
        scripts.compaction,
    ),
    Scenario(
        "sim-audio",
        "Audio deltas (PCM16) with transcript deltas, then the transcript as a message.",
        "completed",
        scripts.audio,
        tokens=(20, 40),
    ),
    Scenario(
        "sim-apply-patch",
        "apply_patch call streamed with event types no SDK knows "
        "(response.apply_patch_call_operation_diff.*).",
        "completed",
        scripts.apply_patch,
        tokens=(20, 40),
    ),
    Scenario(
        "sim-all-families",
        "Kitchen sink: every item type and event family in one response.",
        "completed",
        scripts.all_families,
        tokens=(30, 60),
        reasoning_echo=_REASONING,
    ),
    Scenario(
        "sim-incomplete",
        "Runs out of max_output_tokens (64 unless the request sets it): response.incomplete.",
        "incomplete",
        scripts.incomplete,
        chat="text",
        max_output_tokens=64,
    ),
    Scenario(
        "sim-failed",
        "Text starts, then a nested error event and response.failed (server_error).",
        "failed",
        scripts.failed,
        chat="failed",
    ),
    Scenario(
        "sim-quota-exceeded",
        "error (insufficient_quota) right after in_progress, then "
        "response.failed, as in the real recording.",
        "failed",
        scripts.quota_exceeded,
        chat="failed",
    ),
    Scenario(
        "sim-http-400",
        "HTTP 400 invalid_request_error before any byte of stream.",
        "http_error",
        http_status=400,
        chat="text",
    ),
    Scenario(
        "sim-http-401", "HTTP 401 invalid_api_key.", "http_error", http_status=401, chat="text"
    ),
    Scenario(
        "sim-http-429",
        "HTTP 429 rate_limit_exceeded with retry-after.",
        "http_error",
        http_status=429,
        chat="text",
    ),
    Scenario("sim-http-500", "HTTP 500 server_error.", "http_error", http_status=500, chat="text"),
    Scenario(
        "sim-dropped",
        "Text, then the TCP connection is cut mid-body (sim_drop_after events, "
        "default about half way).",
        "dropped",
        scripts.text,
        chat="text",
    ),
    Scenario(
        "sim-stall",
        "No byte at all for sim_stall_ms (default 120000), then a normal text stream.",
        "stalled",
        scripts.text,
        chat="text",
        defaults={"stall_ms": 120_000},
    ),
    Scenario(
        "sim-slow",
        "A slow trickle: about 1.5 tokens/s with long irregular gaps.",
        "completed",
        scripts.text,
        tokens=(20, 30),
        chat="text",
        defaults={"tokens_per_s": 1.5, "first_token_ms": 2500, "jitter": 0.8},
    ),
)
_BY_ID = {scenario.id: scenario for scenario in SCENARIOS}


def scenario_ids() -> list[str]:
    """Model ids, the default first."""
    return [scenario.id for scenario in SCENARIOS]


def get_scenario(model: str) -> Scenario:
    try:
        return _BY_ID[model]
    except KeyError:
        raise invalid(
            f"The requested model '{model}' does not exist. The simulator's models are: "
            + ", ".join(scenario_ids())
            + ".",
            "model",
            "model_not_found",
        ) from None


@dataclass
class Plan:
    """Everything needed to serve one request: the steps, their pacing and HTTP-level faults."""

    scenario: Scenario
    request: SimRequest
    builder: ResponseBuilder
    steps: Iterator[Step]
    pacing: Pacing
    tokens: int
    stall_ms: float
    stall_after: int | None
    drop_after: int | None

    @property
    def response_id(self) -> str:
        return self.builder.response_id


def start_builder(
    request: SimRequest,
    scenario: Scenario,
    *,
    id_seed: str | None = None,
    created_at: int | None = None,
) -> tuple[ResponseBuilder, int]:
    """The builder for one response and its planned length in tokens (Responses and Chat).

    ``id_seed`` and ``created_at`` default to values derived from the content seed, which
    keeps planning pure; the HTTP views pass fresh ones when no ``sim_seed`` was given.
    """
    if scenario.http_status is not None:
        raise SimulatorError(HTTP_ERRORS[scenario.http_status])
    seed = request.content_seed()
    rng = random.Random(seed + ":content")
    knobs = request.knobs
    tokens = knobs.tokens if knobs.tokens is not None else rng.randint(*scenario.tokens)
    budget = request.max_output_tokens
    if budget is None and scenario.max_output_tokens is not None:
        budget = scenario.max_output_tokens
    if scenario.outcome == "incomplete" and budget is not None:
        tokens = max(tokens, budget + 20)
    if created_at is None:
        created_at = SEEDED_EPOCH + random.Random(seed + ":clock").randrange(365 * 86400)
    builder = ResponseBuilder(
        request,
        rng=rng,
        id_rng=random.Random((id_seed or seed) + ":ids"),
        created_at=created_at,
        max_output_tokens=budget,
        reasoning_echo=scenario.reasoning_echo,
    )
    return builder, tokens


def plan_response(
    request: SimRequest, *, id_seed: str | None = None, created_at: int | None = None, delta_events: bool = True
) -> Plan:
    """Plan a Responses stream. Raises :class:`SimulatorError` for HTTP-error scenarios. Without
    ``delta_events`` a plain text delta's event is a read-only stand-in holding only its type: for the
    server, which sends the frames the builder writes and reads nothing else of a text delta."""
    scenario = get_scenario(request.model)
    builder, tokens = start_builder(request, scenario, id_seed=id_seed, created_at=created_at)
    builder.delta_events = delta_events
    assert scenario.script is not None
    knobs = request.knobs
    if knobs.drop_after is not None:
        drop_after: int | None = knobs.drop_after
    elif scenario.outcome == "dropped":
        # About half way through the text: lifecycle + item + part events, then half the deltas.
        drop_after = 4 + (2 if request.background else 0) + tokens // 2
    else:
        drop_after = None
    return Plan(
        scenario=scenario,
        request=request,
        builder=builder,
        steps=_steps(builder, scenario.script, tokens),
        pacing=pacing_for(request, scenario),
        tokens=tokens,
        stall_ms=_knob(knobs.stall_ms, scenario, "stall_ms", 0.0),
        stall_after=knobs.stall_after,
        drop_after=drop_after,
    )


def _knob(value: float | None, scenario: Scenario, name: str, fallback: float) -> float:
    if value is not None:
        return value
    return float(scenario.defaults.get(name, fallback))


def pacing_for(request: SimRequest, scenario: Scenario) -> Pacing:
    """Timing from the ``sim_*`` knobs, else the scenario's defaults, else seeded realistic ones."""
    knobs = request.knobs
    if knobs.unthrottled:
        return replace(Pacing.unthrottled_pacing(), stamp=knobs.stamp)
    seed = request.content_seed()
    timing = random.Random(seed + ":rates")
    return Pacing(
        tokens_per_s=_knob(
            knobs.tokens_per_s, scenario, "tokens_per_s", round(timing.uniform(40, 80), 1)
        ),
        first_token_ms=_knob(
            knobs.first_token_ms, scenario, "first_token_ms", round(timing.uniform(300, 600))
        ),
        jitter=_knob(knobs.jitter, scenario, "jitter", 0.35),
        seed=seed,
        stamp=knobs.stamp,
        write_interval_s=_write_interval_s(knobs.write_interval_ms),
    )


def _write_interval_s(asked_ms: float | None) -> float:
    """The request's ``sim_write_interval_ms``, else the process's setting, else every frame alone."""
    if asked_ms is not None:
        return asked_ms / 1000
    # build_events() also runs outside a Django process (the benchmarks, scripts): no settings there.
    configured = getattr(settings, "STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS", 0) if settings.configured else 0
    return configured / 1000 if configured else DEFAULT_WRITE_INTERVAL_S


def _steps(builder: ResponseBuilder, script: Script, tokens: int) -> Iterator[Step]:
    yield from builder.start()
    ended = yield from script(builder, tokens)
    if not ended:
        yield from builder.finish()


def iter_events(
    model: str, body: Mapping[str, Any] | None = None, *, seed: str | None = None
) -> Iterator[dict]:
    """The events a request to ``model`` streams, lazily (for very long outputs)."""
    body = dict(body or {})
    if seed is not None:
        body["metadata"] = {**(body.get("metadata") or {}), "sim_seed": seed}
    plan = plan_response(parse_request(body, model=model))
    return (step.event for step in plan.steps)


def build_events(
    model: str, body: Mapping[str, Any] | None = None, *, seed: str | None = None
) -> list[dict]:
    """The events a request to ``model`` streams, as dicts (what each ``data:`` line holds).

    Pure and deterministic. ``seed`` overrides ``metadata.sim_seed``. HTTP-error scenarios
    raise :class:`SimulatorError`; for dropped/stalled scenarios these are the events the
    server generates (the connection fault happens at the HTTP level, see ``Plan``).
    """
    return list(iter_events(model, body, seed=seed))
