"""Rebuild Chat Completions streams (``chat.completion.chunk``) into the Responses item shape.

Each choice becomes a ``message`` item (output_text + refusal parts, logprobs) followed by one
``function_call`` item per tool call, so pages and the API treat both protocols alike.
"""

from __future__ import annotations

from typing import Any

from streams.protocol.output_model import RebuiltItem, RebuiltOutput, TextBuffer

FINISHED_INCOMPLETE = frozenset({"length", "content_filter"})


class _ToolCall:
    __slots__ = ("id", "type", "name", "arguments")

    def __init__(self) -> None:
        self.id: str | None = None
        self.type = "function"
        self.name = TextBuffer()
        self.arguments = TextBuffer()


class _Choice:
    __slots__ = ("role", "content", "refusal", "logprobs", "tool_calls", "finish_reason")

    def __init__(self) -> None:
        self.role: str | None = None
        self.content: TextBuffer | None = None
        self.refusal: TextBuffer | None = None
        self.logprobs: list[Any] = []
        self.tool_calls: dict[int, _ToolCall] = {}
        self.finish_reason: str | None = None

    @property
    def status(self) -> str:
        if self.finish_reason is None:
            return "in_progress"
        return "incomplete" if self.finish_reason in FINISHED_INCOMPLETE else "completed"


class ChatAccumulator:
    """Accumulates chunk payloads; :meth:`merge_into` writes the result into a RebuiltOutput."""

    def __init__(self) -> None:
        self.choices: dict[int, _Choice] = {}
        self.id: str | None = None
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None
        self.chunks = 0

    def feed(self, chunk: dict[str, Any]) -> None:
        self.chunks += 1
        if self.id is None and isinstance(chunk.get("id"), str):
            self.id = chunk["id"]
        if self.model is None and isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        choices = chunk.get("choices")
        for position, raw in enumerate(choices if isinstance(choices, list) else []):
            if isinstance(raw, dict):
                self._choice(raw, position)

    def _choice(self, raw: dict[str, Any], position: int) -> None:
        index = raw.get("index")
        index = (
            index
            if isinstance(index, int) and not isinstance(index, bool) and index >= 0
            else position
        )
        choice = self.choices.setdefault(index, _Choice())
        delta = raw.get("delta") if isinstance(raw.get("delta"), dict) else {}
        if isinstance(delta.get("role"), str):
            choice.role = delta["role"]
        if isinstance(delta.get("content"), str):
            choice.content = choice.content or TextBuffer()
            choice.content.append(delta["content"])
        if isinstance(delta.get("refusal"), str):
            choice.refusal = choice.refusal or TextBuffer()
            choice.refusal.append(delta["refusal"])
        tool_calls = delta.get("tool_calls")
        for number, call in enumerate(tool_calls if isinstance(tool_calls, list) else []):
            if isinstance(call, dict):
                self._tool_call(choice, call, number)
        logprobs = raw.get("logprobs")
        if isinstance(logprobs, dict) and isinstance(logprobs.get("content"), list):
            choice.logprobs.extend(logprobs["content"])
        if isinstance(raw.get("finish_reason"), str):
            choice.finish_reason = raw["finish_reason"]

    @staticmethod
    def _tool_call(choice: _Choice, raw: dict[str, Any], number: int) -> None:
        index = raw.get("index")
        index = (
            index
            if isinstance(index, int) and not isinstance(index, bool) and index >= 0
            else number
        )
        call = choice.tool_calls.setdefault(index, _ToolCall())
        if isinstance(raw.get("id"), str) and raw["id"]:
            call.id = raw["id"]
        if isinstance(raw.get("type"), str):
            call.type = raw["type"]
        function = raw.get("function") if isinstance(raw.get("function"), dict) else {}
        if isinstance(function.get("name"), str):
            call.name.append(function["name"])
        if isinstance(function.get("arguments"), str):
            call.arguments.append(function["arguments"])

    def items(self, first_index: int = 0) -> list[RebuiltItem]:
        items: list[RebuiltItem] = []
        for choice_index, choice in sorted(self.choices.items()):
            status = choice.status
            has_text = choice.content is not None or choice.refusal is not None
            if has_text or not choice.tool_calls:
                content: list[dict[str, Any]] = []
                if choice.content is not None or choice.refusal is None:
                    text = choice.content.value() if choice.content is not None else ""
                    content.append(
                        {
                            "type": "output_text",
                            "text": text,
                            "annotations": [],
                            "logprobs": list(choice.logprobs),
                        }
                    )
                if choice.refusal is not None:
                    content.append({"type": "refusal", "refusal": choice.refusal.value()})
                item = {
                    "type": "message",
                    "id": self.id,
                    "role": choice.role or "assistant",
                    "status": status,
                    "content": content,
                }
                items.append(
                    RebuiltItem(
                        first_index + len(items),
                        "message",
                        self.id,
                        status,
                        item,
                        done=choice.finish_reason is not None,
                        choice_index=choice_index,
                    )
                )
            for _, call in sorted(choice.tool_calls.items()):
                item = {
                    "type": "function_call",
                    "id": call.id,
                    "call_id": call.id,
                    "name": call.name.value(),
                    "arguments": call.arguments.value(),
                    "status": status,
                }
                items.append(
                    RebuiltItem(
                        first_index + len(items),
                        "function_call",
                        call.id,
                        status,
                        item,
                        done=choice.finish_reason is not None,
                        choice_index=choice_index,
                    )
                )
        return items

    @property
    def status(self) -> str | None:
        """completed / incomplete once every choice has a finish_reason, else None."""
        if not self.choices or any(c.finish_reason is None for c in self.choices.values()):
            return None
        if any(c.status == "incomplete" for c in self.choices.values()):
            return "incomplete"
        return "completed"

    def merge_into(self, output: RebuiltOutput, responses_seen: bool) -> None:
        if responses_seen:
            output.mismatches.append("the stream mixes chat.completion.chunk and Responses events")
            output.items.extend(self.items(first_index=len(output.items)))
            return
        output.format = "chat"
        output.items = self.items()
        output.status = output.status or self.status
        output.usage = self.usage
        output.response_id = self.id
        output.model = self.model
