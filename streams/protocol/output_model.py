"""What a rebuild produces: a run's output items, its error and status, as plain records.

:mod:`streams.protocol.rebuild` (Responses events) and :mod:`streams.protocol.chat_chunks` (Chat Completions
chunks) both fill these; the importer and the admin run page read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# The string fields a delta/done pair builds on the item itself.
ITEM_STRING_FIELDS = ("arguments", "input", "code")


class TextBuffer:
    """A string built from many deltas without quadratic copying."""

    __slots__ = ("_chunks",)

    def __init__(self, initial: str = "") -> None:
        self._chunks: list[str] = [initial] if initial else []

    def append(self, text: str) -> None:
        self._chunks.append(text)

    def set(self, text: str) -> None:
        self._chunks = [text]

    def value(self) -> str:
        if len(self._chunks) > 1:
            self._chunks = ["".join(self._chunks)]
        return self._chunks[0] if self._chunks else ""


@dataclass
class StreamError:
    """Why a stream failed: from an ``error`` event (nested or flat) or ``response.failed``."""

    message: str
    code: str | None = None
    type: str | None = None
    param: str | None = None
    source: str = "error"  # the event type it came from
    body: Any = None  # the error object as sent

    def to_json(self) -> dict[str, Any]:
        return {
            "message": self.message,
            "code": self.code,
            "type": self.type,
            "param": self.param,
            "source": self.source,
            "body": self.body,
        }


@dataclass
class RebuiltItem:
    """One output item; ``item`` is shaped like the matching entry of ``response.output``."""

    output_index: int
    type: str
    id: str | None
    status: str | None
    item: dict[str, Any]
    done: bool = False  # its full value arrived (output_item.done, or the terminal response)
    partial_images: dict[int, str] = field(default_factory=dict)  # image generation previews
    choice_index: int | None = None  # Chat Completions only

    @property
    def text(self) -> str:
        """The item's main text: message text, reasoning summary+content, arguments, code…"""
        item = self.item
        if self.type == "message":
            return "".join(
                p.get("text") or ""
                for p in dicts_in(item.get("content"))
                if p.get("type") == "output_text" and isinstance(p.get("text"), str)
            )
        if self.type == "reasoning":
            parts = [*dicts_in(item.get("summary")), *dicts_in(item.get("content"))]
            return "\n\n".join(p["text"] for p in parts if isinstance(p.get("text"), str))
        for key in ITEM_STRING_FIELDS:
            if isinstance(item.get(key), str):
                return item[key]
        return ""

    def to_json(self) -> dict[str, Any]:
        return {
            "output_index": self.output_index,
            "type": self.type,
            "id": self.id,
            "status": self.status,
            "done": self.done,
            "item": self.item,
            "partial_images": {str(k): v for k, v in sorted(self.partial_images.items())},
            "choice_index": self.choice_index,
        }


@dataclass
class RebuiltOutput:
    """Everything a run's events say about its output."""

    format: str = "responses"  # or "chat"
    items: list[RebuiltItem] = field(default_factory=list)
    output_text: str = ""
    response: dict[str, Any] | None = None  # the terminal event's response object
    status: str | None = None  # completed / incomplete / failed, None while not finished
    error: StreamError | None = None
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    model: str | None = None
    unknown_types: list[tuple[str, int]] = field(default_factory=list)
    mismatches: list[str] = field(default_factory=list)
    done_marker: bool = False  # a `data: [DONE]` was seen
    audio: dict[str, str] | None = None  # {"data_b64", "transcript"} when audio was streamed

    def to_json(self, include_response: bool = False) -> dict[str, Any]:
        data = {
            "format": self.format,
            "status": self.status,
            "output_text": self.output_text,
            "items": [item.to_json() for item in self.items],
            "usage": self.usage,
            "error": self.error.to_json() if self.error else None,
            "response_id": self.response_id,
            "model": self.model,
            "unknown_types": [{"type": t, "count": n} for t, n in self.unknown_types],
            "mismatches": self.mismatches,
            "done_marker": self.done_marker,
            "audio": self.audio,
        }
        if include_response:
            data["response"] = self.response
        return data


def dicts_in(value: Any) -> list[dict[str, Any]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None
