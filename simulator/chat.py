"""Chat Completions for the scenarios where it makes sense: data-only ``chat.completion.chunk``
frames ending in ``data: [DONE]``, a usage chunk when ``stream_options.include_usage``,
streamed ``tool_calls[j].function.arguments``, and a mid-stream ``{"error": ...}`` frame for
the failed scenarios (the SDK raises ``APIError`` on it). Pure: no Django, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from simulator import scripts
from simulator.builders import NOW, START, TOKEN, ResponseBuilder, Step
from simulator.errors import invalid
from simulator.pacing import Pacing
from simulator.request import (
    SimRequest,
    check_integer,
    check_number,
    extract_texts,
    parse_knobs,
)
from simulator.scenarios import Scenario, get_scenario, pacing_for, start_builder
from simulator.text import json_tokens, tokenize

FINGERPRINT = "fp_simulator1"


@dataclass
class ChatPlan:
    scenario: Scenario
    request: SimRequest
    steps: Iterator[Step]
    pacing: Pacing
    stall_ms: float
    drop_after: int | None
    # False for the failed scenarios: the stream ends after the error frame, without [DONE].
    done_marker: bool


def _chat_request(body: Any) -> tuple[SimRequest, Mapping[str, Any]]:
    if not isinstance(body, Mapping):
        raise invalid("The request body must be a JSON object.")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise invalid(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    check_number(body, "temperature", 0, 2)
    limit = check_integer(body, "max_completion_tokens", 1) or check_integer(body, "max_tokens", 1)
    top_logprobs = check_integer(body, "top_logprobs", 0, 20) or 0
    system = [
        m for m in messages if isinstance(m, Mapping) and m.get("role") in ("system", "developer")
    ]
    prompt, input_text = extract_texts([m for m in messages if m not in system])
    instructions = "\n".join(extract_texts([m])[1] for m in system) or None
    stream_options = body.get("stream_options") or {}
    metadata = body.get("metadata") or {}
    tools = [
        {
            "type": "function",
            "name": t["function"].get("name"),
            "parameters": t["function"].get("parameters"),
        }
        for t in body.get("tools") or []
        if isinstance(t, Mapping) and isinstance(t.get("function"), Mapping)
    ]
    request = SimRequest(
        model=model,
        body={},
        prompt=prompt,
        input_text=input_text,
        instructions=instructions,
        stream=bool(body.get("stream")),
        background=False,
        max_output_tokens=limit,
        top_logprobs=top_logprobs,
        include=(),
        include_obfuscation=bool(stream_options.get("include_obfuscation", True)),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        tools=tuple(tools),
        metadata=metadata if isinstance(metadata, Mapping) else {},
        knobs=parse_knobs(metadata if isinstance(metadata, Mapping) else {}),
    )
    return request, stream_options


def plan_chat(body: Any, *, id_seed: str | None = None, created_at: int | None = None) -> ChatPlan:
    request, stream_options = _chat_request(body)
    scenario = get_scenario(request.model)
    if scenario.chat is None and scenario.http_status is None:
        raise invalid(
            f"The simulator scenario '{scenario.id}' exists only for the Responses API "
            "(POST /responses); Chat Completions serves the text, logprobs, refusal, "
            "function-call and failure scenarios.",
            "model",
            "model_not_supported",
        )
    builder, tokens = start_builder(request, scenario, id_seed=id_seed, created_at=created_at)
    knobs = request.knobs
    return ChatPlan(
        scenario=scenario,
        request=request,
        # A non-streamed completion always carries usage; a stream only when asked.
        steps=_chunks(
            builder,
            scenario,
            tokens,
            bool(stream_options.get("include_usage")) or not request.stream,
            logprobs=bool(body.get("logprobs")) or scenario.chat == "logprobs",
        ),
        pacing=pacing_for(request, scenario),
        stall_ms=knobs.stall_ms
        if knobs.stall_ms is not None
        else float(scenario.defaults.get("stall_ms", 0)),
        drop_after=knobs.drop_after
        if knobs.drop_after is not None
        else (2 + tokens // 2 if scenario.outcome == "dropped" else None),
        done_marker=scenario.chat != "failed",
    )


def _chunks(
    b: ResponseBuilder, scenario: Scenario, tokens: int, include_usage: bool, logprobs: bool
) -> Iterator[Step]:
    base = {
        "id": "chatcmpl-" + b.response_id[5:34],
        "object": "chat.completion.chunk",
        "created": b.created_at,
        "model": b.request.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }

    def chunk(
        delta: dict[str, Any],
        pause: int = TOKEN,
        finish: str | None = None,
        token_logprobs: list[dict[str, Any]] | None = None,
    ) -> Step:
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": {"content": token_logprobs, "refusal": None} if token_logprobs else None,
            "finish_reason": finish,
        }
        data: dict[str, Any] = {**base, "choices": [choice]}
        if include_usage:
            data["usage"] = None
        if b.obfuscate:
            data["obfuscation"] = b.writer.obfuscation(len(str(delta)))
        return Step(data, pause)

    yield chunk({"role": "assistant", "content": "", "refusal": None}, START)
    kind = scenario.chat
    finish = "stop"
    if kind == "tools":
        for j, (name, arguments) in enumerate(scripts.planned_function_calls(b)):
            yield chunk(
                {
                    "tool_calls": [
                        {
                            "index": j,
                            "id": b.call_id(),
                            "type": "function",
                            "function": {"name": name, "arguments": ""},
                        }
                    ]
                }
            )
            for piece in json_tokens(arguments):
                if not b.spend():
                    break
                yield chunk({"tool_calls": [{"index": j, "function": {"arguments": piece}}]})
        finish = "tool_calls"
    else:
        count = max(1, tokens // 3) if kind == "failed" else tokens
        if scenario.id == "sim-quota-exceeded":
            count = 0
        words = (
            tokenize("I'm sorry, but I can't help with that.")
            if kind == "refusal"
            else b.writer.tokens(count)
        )
        for token in words:
            if not b.spend():
                break
            if kind == "refusal":
                yield chunk({"refusal": token})
            else:
                yield chunk(
                    {"content": token},
                    token_logprobs=[b.logprob_entry(token)] if logprobs else None,
                )
        if kind == "failed":
            code, message = (
                scripts.QUOTA_ERROR if scenario.id == "sim-quota-exceeded" else scripts.SERVER_ERROR
            )
            yield Step(
                {"error": {"message": message, "type": code, "param": None, "code": code}}, TOKEN
            )
            return
    if b.exhausted:
        finish = "length"
    yield chunk({}, NOW, finish)
    if include_usage:
        usage = b.usage()
        yield Step(
            {
                **base,
                "choices": [],
                "usage": {
                    "prompt_tokens": usage["input_tokens"],
                    "completion_tokens": usage["output_tokens"],
                    "total_tokens": usage["total_tokens"],
                    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                    "completion_tokens_details": {
                        "reasoning_tokens": 0,
                        "audio_tokens": 0,
                        "accepted_prediction_tokens": 0,
                        "rejected_prediction_tokens": 0,
                    },
                },
            },
            NOW,
        )


def completion_from_chunks(chunks: list[dict[str, Any]]) -> dict[str, Any]:
    """Fold streamed chunks into the non-streaming ``chat.completion`` object."""
    content, refusal, calls, finish, usage = [], [], {}, None, None
    token_logprobs: list[dict[str, Any]] = []
    first = chunks[0]
    for data in chunks:
        if data.get("usage"):
            usage = data["usage"]
        for choice in data.get("choices", []):
            delta = choice["delta"]
            content.append(delta.get("content") or "")
            refusal.append(delta.get("refusal") or "")
            for call in delta.get("tool_calls") or []:
                slot = calls.setdefault(
                    call["index"],
                    {
                        "id": call.get("id"),
                        "type": "function",
                        "function": {"name": "", "arguments": ""},
                    },
                )
                slot["function"]["name"] += call.get("function", {}).get("name") or ""
                slot["function"]["arguments"] += call.get("function", {}).get("arguments") or ""
            if choice.get("logprobs"):
                token_logprobs.extend(choice["logprobs"]["content"] or [])
            finish = choice.get("finish_reason") or finish
    message = {
        "role": "assistant",
        "content": "".join(content) or None,
        "refusal": "".join(refusal) or None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = [calls[index] for index in sorted(calls)]
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": first["model"],
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": {"content": token_logprobs, "refusal": None}
                if token_logprobs
                else None,
            }
        ],
        "usage": usage,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
    }
