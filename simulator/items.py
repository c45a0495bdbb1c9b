"""What the model itself produces besides messages: reasoning (hidden, summarised or raw text),
function, custom and apply_patch tool calls, and audio, each with its streamed deltas."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from simulator.builders import HIDDEN, NOW, TOKEN, ResponseBuilder, Step
from simulator.text import OBFUSCATION_ALPHABET, json_tokens, tokenize


def reasoning(
    b: ResponseBuilder,
    hidden_tokens: int = 0,
    summary: Sequence[Iterable[str]] = (),
    text: Sequence[Iterable[str]] = (),
) -> Iterator[Step]:
    """A reasoning item: hidden tokens (no events), summary parts, raw reasoning_text parts."""
    if b.exhausted:
        return
    index = b.next_output_index()
    item_id = b.new_id("rs")
    encrypted = "reasoning.encrypted_content" in b.request.include
    added: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": []}
    if encrypted:
        added["encrypted_content"] = ""
    yield b.event("response.output_item.added", output_index=index, item=added)
    hidden = hidden_tokens
    if hidden and not b.spend(hidden, reasoning=True):
        hidden = 0
    summaries = []
    for summary_index, tokens in enumerate(summary):
        if b.exhausted:
            break
        where = {"item_id": item_id, "output_index": index, "summary_index": summary_index}
        yield b.event(
            "response.reasoning_summary_part.added",
            **where,
            part={"type": "summary_text", "text": ""},
        )
        done = yield from b.stream_field(
            "response.reasoning_summary_text.delta", tokens, where, reasoning=True
        )
        yield b.event("response.reasoning_summary_text.done", **where, text=done)
        extra = {"status": "incomplete"} if b.exhausted else {}
        part = {"type": "summary_text", "text": done}
        yield b.event("response.reasoning_summary_part.done", **where, part=part, **extra)
        summaries.append(dict(part))
    contents = []
    for content_index, tokens in enumerate(text):
        if b.exhausted:
            break
        where = {"item_id": item_id, "output_index": index, "content_index": content_index}
        yield b.event(
            "response.content_part.added", **where, part={"type": "reasoning_text", "text": ""}
        )
        done = yield from b.stream_field(
            "response.reasoning_text.delta", tokens, where, obfuscate=False, reasoning=True
        )
        yield b.event("response.reasoning_text.done", **where, text=done)
        yield b.event(
            "response.content_part.done", **where, part={"type": "reasoning_text", "text": done}
        )
        contents.append({"type": "reasoning_text", "text": done})
    item: dict[str, Any] = {"id": item_id, "type": "reasoning", "summary": summaries}
    if contents:
        item["content"] = contents
    if encrypted:
        item["encrypted_content"] = "gAAAAAB" + "".join(
            b.rng.choice(OBFUSCATION_ALPHABET) for _ in range(64 + hidden // 4)
        )
    yield b.finish_item(index, item, HIDDEN, float(hidden_tokens))


def function_call(b: ResponseBuilder, name: str, arguments: str) -> Iterator[Step]:
    if b.exhausted:
        return
    index = b.next_output_index()
    item_id, call_id = b.new_id("fc"), b.call_id()
    yield b.event(
        "response.output_item.added",
        output_index=index,
        item={
            "id": item_id,
            "type": "function_call",
            "status": "in_progress",
            "arguments": "",
            "call_id": call_id,
            "name": name,
        },
    )
    where = {"item_id": item_id, "output_index": index}
    streamed = yield from b.stream_field(
        "response.function_call_arguments.delta", json_tokens(arguments), where
    )
    yield b.event("response.function_call_arguments.done", **where, arguments=streamed)
    status = "incomplete" if b.exhausted else "completed"
    yield b.finish_item(
        index,
        {
            "id": item_id,
            "type": "function_call",
            "status": status,
            "arguments": streamed,
            "call_id": call_id,
            "name": name,
        },
    )


def custom_tool_call(b: ResponseBuilder, name: str, tool_input: str) -> Iterator[Step]:
    if b.exhausted:
        return
    index = b.next_output_index()
    item_id, call_id = b.new_id("ctc"), b.call_id()
    added = {
        "id": item_id,
        "type": "custom_tool_call",
        "status": "in_progress",
        "call_id": call_id,
        "input": "",
        "name": name,
    }
    yield b.event("response.output_item.added", output_index=index, item=added)
    where = {"item_id": item_id, "output_index": index}
    streamed = yield from b.stream_field(
        "response.custom_tool_call_input.delta", tokenize(tool_input), where
    )
    yield b.event("response.custom_tool_call_input.done", **where, input=streamed)
    status = "incomplete" if b.exhausted else "completed"
    yield b.finish_item(index, {**added, "status": status, "input": streamed})


def audio(b: ResponseBuilder, tokens: list[str]) -> Iterator[Step]:
    """Spoken output: PCM16 chunks interleaved with transcript deltas (no output item)."""
    if b.exhausted:
        return
    response_id = b.response_id
    transcript = []
    for position, token in enumerate(tokens):
        if not b.spend():
            break
        yield b.event(
            "response.audio.transcript.delta", TOKEN, delta=token, response_id=response_id
        )
        transcript.append(token)
        if position % 3 == 2:
            yield b.event("response.audio.delta", NOW, delta=_tone(position))
    yield b.event("response.audio.delta", NOW, delta=_tone(len(tokens)))
    yield b.event("response.audio.done", response_id=response_id)
    yield b.event("response.audio.transcript.done", response_id=response_id)
    return "".join(transcript)


def _tone(position: int, samples: int = 480) -> str:
    """20 ms of a quiet 24 kHz PCM16 sine tone, base64 like the real audio deltas."""
    frequency = 220 + 20 * (position % 7)
    frames = b"".join(
        struct.pack("<h", round(3000 * math.sin(math.tau * frequency * (n / 24000))))
        for n in range(samples)
    )
    return base64.b64encode(frames).decode()


def apply_patch(b: ResponseBuilder, path: str, diff: str) -> Iterator[Step]:
    """An apply_patch call streamed with ``response.apply_patch_call_operation_diff.*``: event
    types seen from gpt-5.1 on the wire that no SDK version declares (docs/events.md, unknown types)."""
    if b.exhausted:
        return
    index, item_id, call_id = b.next_output_index(), b.new_id("apc"), b.call_id()
    where = {"item_id": item_id, "output_index": index}
    operation = {"type": "update_file", "path": path, "diff": ""}
    added = {
        "id": item_id,
        "type": "apply_patch_call",
        "status": "in_progress",
        "call_id": call_id,
        "operation": operation,
    }
    yield b.event("response.output_item.added", output_index=index, item=added)
    pieces = diff.splitlines(keepends=True)
    streamed = yield from b.stream_field(
        "response.apply_patch_call_operation_diff.delta", pieces, where
    )
    yield b.event("response.apply_patch_call_operation_diff.done", **where, diff=streamed)
    yield b.finish_item(
        index, {**added, "status": "completed", "operation": {**operation, "diff": streamed}}
    )
