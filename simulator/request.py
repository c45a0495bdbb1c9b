"""Parse and validate a Responses ``create`` body into a :class:`SimRequest` (pure, no Django).

Validation mirrors the real API where it is cheap to do so (``temperature`` outside [0, 2],
``max_output_tokens`` below 16 ...), with the same messages and codes, so clients see the
same ``BadRequestError`` they would get from OpenAI.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from simulator.errors import invalid, number_text

MAX_SIM_TOKENS = 2_000_000
UNTHROTTLED = ("max", "0", "inf", "unthrottled")


@dataclass(frozen=True)
class Knobs:
    """The ``sim_*`` metadata keys, parsed. ``None`` means "use the scenario's default"."""

    seed: str | None = None
    tokens: int | None = None
    tokens_per_s: float | None = None
    unthrottled: bool = False
    first_token_ms: float | None = None
    jitter: float | None = None
    stall_ms: float | None = None
    stall_after: int | None = None
    drop_after: int | None = None
    # Benchmarks: stamp each event with the wall-clock time it was written (``sim_stamp``).
    stamp: bool = False
    # A stream writes at most once per this many ms; frames due in between go out together.
    write_interval_ms: float | None = None


@dataclass(frozen=True)
class SimRequest:
    """What a scenario needs from the request body; ``body`` keeps the original for echoing."""

    model: str
    body: Mapping[str, Any]
    prompt: str
    input_text: str
    instructions: str | None
    stream: bool
    background: bool
    max_output_tokens: int | None
    top_logprobs: int
    include: tuple[str, ...]
    include_obfuscation: bool
    parallel_tool_calls: bool
    tools: tuple[Mapping[str, Any], ...]
    metadata: Mapping[str, Any]
    knobs: Knobs

    def content_seed(self) -> str:
        """``sim_seed`` if given, else a digest of model + instructions + input (see docs)."""
        if self.knobs.seed is not None:
            return "seed:" + self.knobs.seed
        digest = hashlib.sha256(
            json.dumps([self.model, self.instructions, self.input_text]).encode()
        ).hexdigest()
        return "input:" + digest[:32]

    def tools_of_type(self, *types: str) -> list[Mapping[str, Any]]:
        return [tool for tool in self.tools if tool.get("type") in types]


def _text_of_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return ""


def extract_texts(value: Any) -> tuple[str, str]:
    """(prompt, all_text): the last user message's text and every input text joined."""
    if value is None:
        return "", ""
    if isinstance(value, str):
        return value, value
    if not isinstance(value, list):
        raise invalid(
            "Invalid type for 'input': expected a string or an array.", "input", "invalid_type"
        )
    prompt = ""
    texts = []
    for item in value:
        if not isinstance(item, Mapping):
            continue
        text = _text_of_content(item.get("content"))
        if not text and isinstance(item.get("output"), str):
            text = item["output"]
        if text:
            texts.append(text)
            if item.get("role", "user") == "user":
                prompt = text
    return prompt, "\n".join(texts)


def check_number(body: Mapping[str, Any], name: str, low: float, high: float) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(
            f"Invalid type for '{name}': expected a decimal, but got a {type(value).__name__} instead.",
            name,
            "invalid_type",
        )
    if value < low:
        raise invalid(
            f"Invalid '{name}': decimal below minimum value. Expected a value >= {number_text(low)}, "
            f"but got {number_text(value)} instead.",
            name,
            "decimal_below_min_value",
        )
    if value > high:
        raise invalid(
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {number_text(high)}, "
            f"but got {number_text(value)} instead.",
            name,
            "decimal_above_max_value",
        )
    return float(value)


def check_integer(
    body: Mapping[str, Any], name: str, low: int, high: int | None = None
) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(
            f"Invalid type for '{name}': expected an integer, but got a {type(value).__name__} instead.",
            name,
            "invalid_type",
        )
    if value < low:
        raise invalid(
            f"Invalid '{name}': integer below minimum value. Expected a value >= {low}, "
            f"but got {value} instead.",
            name,
            "integer_below_min_value",
        )
    if high is not None and value > high:
        raise invalid(
            f"Invalid '{name}': integer above maximum value. Expected a value <= {high}, "
            f"but got {value} instead.",
            name,
            "integer_above_max_value",
        )
    return value


def _knob_number(metadata: Mapping[str, Any], key: str, low: float, high: float) -> float | None:
    raw = metadata.get(key)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise invalid(
            f"Invalid 'metadata.{key}': expected a number, got {raw!r}.", f"metadata.{key}"
        ) from None
    if not low <= value <= high:
        raise invalid(
            f"Invalid 'metadata.{key}': expected a number between {number_text(low)} and "
            f"{number_text(high)}, got {raw!r}.",
            f"metadata.{key}",
        )
    return value


def _knob_int(metadata: Mapping[str, Any], key: str, high: int) -> int | None:
    value = _knob_number(metadata, key, 0, high)
    if value is None:
        return None
    if not value.is_integer():
        raise invalid(f"Invalid 'metadata.{key}': expected an integer.", f"metadata.{key}")
    return int(value)


def parse_knobs(metadata: Mapping[str, Any]) -> Knobs:
    """Read the ``sim_*`` keys; metadata values are strings on the real API, numbers are accepted."""
    rate_raw = metadata.get("sim_tokens_per_s")
    unthrottled = (
        isinstance(rate_raw, (str, int, float)) and str(rate_raw).strip().lower() in UNTHROTTLED
    )
    if isinstance(rate_raw, (int, float)) and not isinstance(rate_raw, bool) and rate_raw == 0:
        unthrottled = True
    seed = metadata.get("sim_seed")
    return Knobs(
        seed=None if seed is None else str(seed),
        tokens=_knob_int(metadata, "sim_tokens", MAX_SIM_TOKENS),
        tokens_per_s=None
        if unthrottled
        else _knob_number(metadata, "sim_tokens_per_s", 0.01, 10_000_000),
        unthrottled=unthrottled,
        first_token_ms=_knob_number(metadata, "sim_first_token_ms", 0, 600_000),
        jitter=_knob_number(metadata, "sim_jitter", 0, 5),
        stall_ms=_knob_number(metadata, "sim_stall_ms", 0, 3_600_000),
        stall_after=_knob_int(metadata, "sim_stall_after", MAX_SIM_TOKENS * 4),
        drop_after=_knob_int(metadata, "sim_drop_after", MAX_SIM_TOKENS * 4),
        stamp=str(metadata.get("sim_stamp", "")).strip().lower() in ("1", "true", "yes"),
        write_interval_ms=_knob_number(metadata, "sim_write_interval_ms", 0, 1000),
    )


MAX_BODY_DEPTH = 64
_LONE_SURROGATE = re.compile(r"[\ud800-\udfff]")


def checked_body(body: Any) -> Any:
    """A decoded body with bounded nesting (every later walk and echo of it stays shallow) and lone
    UTF-16 surrogates replaced by U+FFFD (UTF-8 cannot encode them, so echoing one would break the
    stream); :class:`SimulatorError` (HTTP 400) when it nests too deeply."""
    root = [body]
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > MAX_BODY_DEPTH:
            raise invalid(f"The request body is nested more than {MAX_BODY_DEPTH} levels deep.")
        keys = list(container) if isinstance(container, dict) else range(len(container))
        for key in keys:
            value = container[key]
            if isinstance(value, str) and not value.isascii():
                container[key] = _LONE_SURROGATE.sub("\ufffd", value)
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))
            if isinstance(key, str) and not key.isascii() and _LONE_SURROGATE.search(key):
                container[_LONE_SURROGATE.sub("\ufffd", key)] = container.pop(key)
    return root[0]


def parse_request(body: Any, model: str | None = None) -> SimRequest:
    """Validate a ``POST /responses`` body; raises :class:`SimulatorError` (HTTP 400) when bad."""
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    model = model or body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    check_number(body, "temperature", 0, 2)
    check_number(body, "top_p", 0, 1)
    max_output_tokens = check_integer(body, "max_output_tokens", 16)
    top_logprobs = check_integer(body, "top_logprobs", 0, 20) or 0
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise invalid(
            "Invalid type for 'metadata': expected an object.", "metadata", "invalid_type"
        )
    tools = body.get("tools") or []
    if not isinstance(tools, list) or not all(isinstance(tool, Mapping) for tool in tools):
        raise invalid(
            "Invalid type for 'tools': expected an array of objects.", "tools", "invalid_type"
        )
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        instructions = _text_of_content(instructions) or None
    include = body.get("include") or []
    stream_options = body.get("stream_options") or {}
    prompt, input_text = extract_texts(body.get("input"))
    return SimRequest(
        model=model,
        body=body,
        prompt=prompt,
        input_text=input_text,
        instructions=instructions,
        stream=bool(body.get("stream")),
        background=bool(body.get("background")),
        max_output_tokens=max_output_tokens,
        top_logprobs=top_logprobs,
        include=tuple(str(name) for name in include) if isinstance(include, list) else (),
        include_obfuscation=bool(stream_options.get("include_obfuscation", True))
        if isinstance(stream_options, Mapping)
        else True,
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        tools=tuple(tools),
        metadata=metadata,
        knobs=parse_knobs(metadata),
    )
