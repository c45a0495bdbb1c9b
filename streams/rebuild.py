"""Rebuild a run's output items (messages, reasoning, tool calls…) from its stored events.

Items are addressed by ``output_index`` (or ``item_id``), never by nesting, so interleaved
items (OpenRouter) and streams without ``sequence_number`` (early 2025) rebuild the same way.
Deltas build a field live; a ``.done`` / ``content_part.done`` / ``output_item.done`` carries the
full value, which wins — a disagreement is noted in ``mismatches``. The terminal response's
``output`` is compared at the end (and fills items the stream never showed). Chat Completions
chunks are rebuilt by :mod:`streams.chat` into the same :class:`RebuiltOutput` shape.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from streams import catalogue
from streams.catalogue import EventKind

TERMINAL_STATUS = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}
# The string fields a delta/done pair builds on the item itself.
ITEM_STRING_FIELDS = ("arguments", "input", "code")
PART_TYPES = {
    "text": ("output_text", "text"),
    "refusal": ("refusal", "refusal"),
    "reasoning_text": ("reasoning_text", "text"),
}
DEFAULT_ERROR_MESSAGE = "An error occurred during streaming"
# Re-encrypted between output_item.done and the terminal response (Fernet tokens carry a
# timestamp), so only their presence is compared.
VOLATILE_KEYS = frozenset({"encrypted_content"})


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
                for p in _dicts(item.get("content"))
                if p.get("type") == "output_text" and isinstance(p.get("text"), str)
            )
        if self.type == "reasoning":
            parts = [*_dicts(item.get("summary")), *_dicts(item.get("content"))]
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


class _Part:
    """A content or summary part being built: its last full value plus streamed pieces."""

    __slots__ = ("base", "key", "text", "logprobs", "annotations", "streamed")

    def __init__(self, base: dict[str, Any], key: str) -> None:
        self.base = base
        self.key = key
        self.text: TextBuffer | None = None
        self.logprobs: list[Any] | None = None
        self.annotations: dict[int, Any] = {}
        self.streamed = False

    def value(self) -> str:
        if self.text is not None:
            return self.text.value()
        value = self.base.get(self.key)
        return value if isinstance(value, str) else ""

    def materialize(self) -> dict[str, Any]:
        part = copy.deepcopy(self.base)
        if self.text is not None:
            part[self.key] = self.text.value()
        if self.logprobs is not None:
            part["logprobs"] = list(self.logprobs)
        if self.annotations:
            annotations = list(part.get("annotations") or [])
            for index in sorted(self.annotations):
                if index < len(annotations):
                    annotations[index] = self.annotations[index]
                else:
                    annotations.append(self.annotations[index])
            part["annotations"] = annotations
        return part


class _ItemState:
    __slots__ = (
        "index",
        "base",
        "done_item",
        "status",
        "content",
        "summary",
        "strings",
        "commands",
        "outputs",
        "partial_images",
        "added",
    )

    def __init__(self, index: int, base: dict[str, Any], added: bool) -> None:
        self.index = index
        self.added = added
        self.done_item: dict[str, Any] | None = None
        self.status: str | None = None
        self.content: dict[int, _Part] = {}
        self.summary: dict[int, _Part] = {}
        self.strings: dict[str, TextBuffer] = {}  # arguments / input / code / diff
        self.commands: dict[int, TextBuffer] = {}
        self.outputs: dict[int, dict[str, Any]] = {}
        self.partial_images: dict[int, str] = {}
        self.reset_base(base)

    def reset_base(self, base: dict[str, Any]) -> None:
        self.base = base
        for key, parts in (("content", self.content), ("summary", self.summary)):
            for position, part in enumerate(_dicts(base.get(key))):
                if position not in parts:
                    text_key = "refusal" if part.get("type") == "refusal" else "text"
                    parts[position] = _Part(copy.deepcopy(part), text_key)

    @property
    def type(self) -> str:
        source = self.done_item if self.done_item is not None else self.base
        value = source.get("type")
        return value if isinstance(value, str) else "unknown"

    def streamed_values(self) -> dict[str, str]:
        """Paths and values of the fields the stream built (to compare with a done value)."""
        values: dict[str, str] = {}
        for name, parts in (("content", self.content), ("summary", self.summary)):
            for position, part in sorted(parts.items()):
                if part.streamed:
                    values[f"{name}[{position}].{part.key}"] = part.value()
        for key, buffer in self.strings.items():
            values["operation.diff" if key == "diff" else key] = buffer.value()
        for position, buffer in sorted(self.commands.items()):
            values[f"action.commands[{position}]"] = buffer.value()
        return values

    def materialize(self) -> dict[str, Any]:
        if self.done_item is not None:
            return copy.deepcopy(self.done_item)
        item = copy.deepcopy(self.base)
        if self.content:
            item["content"] = [part.materialize() for _, part in sorted(self.content.items())]
        if self.summary:
            item["summary"] = [part.materialize() for _, part in sorted(self.summary.items())]
        for key, buffer in self.strings.items():
            if key == "diff":
                operation = item.get("operation") if isinstance(item.get("operation"), dict) else {}
                item["operation"] = {**operation, "diff": buffer.value()}
            else:
                item[key] = buffer.value()
        if self.commands:
            action = item.get("action") if isinstance(item.get("action"), dict) else {}
            commands = (
                list(action.get("commands") or [])
                if isinstance(action.get("commands"), list)
                else []
            )
            for position, buffer in sorted(self.commands.items()):
                if position < len(commands):
                    commands[position] = buffer.value()
                else:
                    commands.append(buffer.value())
            item["action"] = {**action, "commands": commands}
        if self.outputs:
            item["output"] = [_shell_output(entry) for _, entry in sorted(self.outputs.items())]
        if self.status and "status" in item:
            item["status"] = self.status
        return item


class OutputRebuilder:
    """Feed events in order with :meth:`feed`; read the output so far with :meth:`result`."""

    def __init__(self) -> None:
        self._items: dict[int, _ItemState] = {}
        self._index_by_id: dict[str, int] = {}
        self._unknown: Counter[str] = Counter()
        self._mismatches: list[str] = []
        self._response: dict[str, Any] | None = None
        self._snapshot: dict[str, Any] | None = None
        self._status: str | None = None
        self._error: StreamError | None = None
        self._done_marker = False
        self._audio: dict[str, TextBuffer] = {}
        self._responses_events = 0
        self._chat: Any = None  # streams.chat.ChatAccumulator once a chunk arrives

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, event_type: str, payload: Any) -> None:
        kind = catalogue.describe(event_type)
        if not kind.known:
            self._unknown[event_type] += 1
            return
        if kind.family == "streamscope":
            if event_type == catalogue.DONE_MARKER:
                self._done_marker = True
            return
        if not isinstance(payload, dict):
            self._note(f"{event_type}: payload is not a JSON object; ignored")
            return
        if kind.phase == catalogue.CHUNK:
            if self._chat is None:
                from streams.chat import ChatAccumulator

                self._chat = ChatAccumulator()
            self._chat.feed(payload)
            return
        if kind.phase != catalogue.ERROR:  # chat servers send `{"error": ...}` too
            self._responses_events += 1
        if self._response is not None and kind.phase not in (catalogue.TERMINAL, catalogue.ERROR):
            self._note(f"{event_type} after the terminal event")
        handler = _HANDLERS.get(kind.phase)
        if handler is not None:
            handler(self, kind, payload)

    def _note(self, message: str) -> None:
        if len(self._mismatches) < 200:
            self._mismatches.append(message)

    def _differs(self, index: int, path: str, source: str, streamed: str, final: str) -> None:
        self._note(
            f"output[{index}].{path}: {source} differs from the streamed value "
            f"({len(streamed)} chars streamed, {len(final)} in the full value; it wins)"
        )

    def _lifecycle(self, kind: EventKind, payload: dict[str, Any]) -> None:
        response = payload.get("response")
        if isinstance(response, dict):
            self._snapshot = response

    def _terminal(self, kind: EventKind, payload: dict[str, Any]) -> None:
        if self._response is not None:
            self._note(f"second terminal event {kind.type}")
        response = payload.get("response")
        self._response = response if isinstance(response, dict) else {}
        self._snapshot = self._response or self._snapshot
        self._status = TERMINAL_STATUS[kind.type]
        error = self._response.get("error")
        if self._status == "failed" and self._error is None:
            source = error if isinstance(error, dict) else {}
            self._error = StreamError(
                message=_str(source.get("message")) or "the response failed",
                code=_str(source.get("code")),
                type=_str(source.get("type")),
                param=_str(source.get("param")),
                source=kind.type,
                body=error,
            )

    def _error_event(self, kind: EventKind, payload: dict[str, Any]) -> None:
        nested = payload.get("error")
        # The API nests the details under "error"; the spec and SDK document them flat.
        source = nested if isinstance(nested, dict) else payload
        body = (
            nested
            if isinstance(nested, dict)
            else {key: payload[key] for key in ("code", "message", "param") if key in payload}
        )
        if isinstance(nested, str):
            source, body = {"message": nested}, nested
        error = StreamError(
            message=_str(source.get("message")) or DEFAULT_ERROR_MESSAGE,
            code=_str(source.get("code")),
            type=_str(source.get("type")) if source is nested else None,
            param=_str(source.get("param")),
            source="error",
            body=body,
        )
        if self._error is None:
            self._error = error
        else:
            self._note(f"another error event: {error.message}")

    def _item_event(self, kind: EventKind, payload: dict[str, Any]) -> None:
        if kind.field == "item":
            self._output_item(kind, payload)
            return
        if kind.family == "audio":
            buffer = self._audio.setdefault(kind.field or "audio", TextBuffer())
            delta = payload.get("delta")
            if kind.phase == catalogue.DELTA and isinstance(delta, str):
                buffer.append(delta)
            return
        state = self._locate(kind, payload)
        if state is None:
            return
        if state.done_item is not None and kind.phase != catalogue.PROGRESS:
            self._note(f"output[{state.index}]: {kind.type} after its output_item.done")
        if kind.phase == catalogue.PROGRESS:
            state.status = kind.item_status
        elif kind.field in PART_TYPES or kind.field == "part":
            self._content(state, kind, payload)
        elif kind.field in ("summary_text", "summary_part"):
            self._summary(state, kind, payload)
        elif kind.field == "annotation":
            part = self._part(state, state.content, _int(payload.get("content_index")) or 0, "text")
            index = _int(payload.get("annotation_index"))
            part.annotations[index if index is not None else len(part.annotations)] = payload.get(
                "annotation"
            )
        elif kind.field in ITEM_STRING_FIELDS or kind.field == "diff":
            self._string(state, kind, payload, kind.field, kind.field)
        elif kind.field == "command":
            self._command(state, kind, payload)
        elif kind.field == "output":
            self._shell_output_event(state, kind, payload)
        elif kind.field == "partial_image":
            index = _int(payload.get("partial_image_index"))
            image = payload.get("partial_image_b64")
            if isinstance(image, str):
                state.partial_images[index if index is not None else len(state.partial_images)] = (
                    image
                )

    def _output_item(self, kind: EventKind, payload: dict[str, Any]) -> None:
        item = payload.get("item")
        index = _int(payload.get("output_index"))
        if not isinstance(item, dict):
            self._note(f"{kind.type} without an item object")
            return
        if index is None:
            index = self._index_by_id.get(_str(item.get("id")) or "", len(self._items))
        item = copy.deepcopy(item)
        state = self._items.get(index)
        if kind.phase == catalogue.ADDED:
            if state is None:
                self._items[index] = state = _ItemState(index, item, added=True)
            else:
                if state.added:
                    self._note(f"output[{index}]: output_item.added twice")
                state.added = True
                state.reset_base(item)
        else:
            if state is None:
                self._items[index] = state = _ItemState(index, item, added=False)
            else:
                self._compare_done(state, item)
                if state.added and state.base.get("id") != item.get("id"):
                    self._note(
                        f"output[{index}]: id changed from {state.base.get('id')!r} "
                        f"(added) to {item.get('id')!r} (done)"
                    )
            state.done_item = item
        if isinstance(item.get("id"), str):
            self._index_by_id[item["id"]] = index

    def _compare_done(self, state: _ItemState, done: dict[str, Any]) -> None:
        for path, streamed in state.streamed_values().items():
            final = _lookup(done, path)
            if isinstance(final, str) and final != streamed:
                self._differs(state.index, path, "response.output_item.done", streamed, final)

    def _locate(self, kind: EventKind, payload: dict[str, Any]) -> _ItemState | None:
        index = _int(payload.get("output_index"))
        item_id = _str(payload.get("item_id"))
        if index is None and item_id is not None:
            index = self._index_by_id.get(item_id)
        if index is None:
            self._note(f"{kind.type} names no known output_index / item_id; not rebuilt")
            return None
        state = self._items.get(index)
        if state is None:
            item_type = kind.item_type or "unknown"
            part = payload.get("part")
            if isinstance(part, dict) and part.get("type") == "reasoning_text":
                item_type = "reasoning"
            base: dict[str, Any] = {"type": item_type}
            if item_id is not None:
                base["id"] = item_id
                self._index_by_id[item_id] = index
            self._items[index] = state = _ItemState(index, base, added=False)
            self._note(f"output[{index}]: {kind.type} before its output_item.added")
        return state

    def _part(
        self, state: _ItemState, parts: dict[int, _Part], position: int, field_name: str
    ) -> _Part:
        part = parts.get(position)
        if part is None:
            part_type, key = PART_TYPES.get(field_name, ("summary_text", "text"))
            base: dict[str, Any] = {"type": part_type, key: ""}
            if part_type == "output_text":
                base["annotations"] = []
            parts[position] = part = _Part(base, key)
        return part

    def _content(self, state: _ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        position = _int(payload.get("content_index")) or 0
        if kind.field == "part":
            new = payload.get("part")
            if not isinstance(new, dict):
                return
            key = "refusal" if new.get("type") == "refusal" else "text"
            part = state.content.get(position)
            if part is None or kind.phase == catalogue.ADDED:
                state.content[position] = fresh = _Part(copy.deepcopy(new), key)
                if part is not None and kind.phase == catalogue.ADDED and part.streamed:
                    fresh.text, fresh.logprobs, fresh.streamed = part.text, part.logprobs, True
                return
            self._check(state, f"content[{position}].{key}", part, new.get(key), kind.type)
            # content_part.done is seen with "logprobs": [] although the deltas carried some.
            keep_logprobs = part.logprobs if part.logprobs and not new.get("logprobs") else None
            keep_annotations = part.annotations if "annotations" not in new else {}
            part.base, part.key, part.text = copy.deepcopy(new), key, None
            part.logprobs, part.annotations, part.streamed = keep_logprobs, keep_annotations, True
            return
        part = self._part(state, state.content, position, kind.field or "text")
        self._apply_text(state, part, kind, payload, f"content[{position}].{part.key}")
        logprobs = payload.get("logprobs")
        if isinstance(logprobs, list) and logprobs:
            if kind.phase == catalogue.DELTA:
                part.logprobs = (part.logprobs or []) + logprobs
            else:
                part.logprobs = list(logprobs)

    def _summary(self, state: _ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        position = _int(payload.get("summary_index")) or 0
        if kind.field == "summary_part":
            new = payload.get("part")
            if not isinstance(new, dict):
                return
            part = state.summary.get(position)
            if part is not None and kind.phase == catalogue.DONE:
                self._check(state, f"summary[{position}].text", part, new.get("text"), kind.type)
            if part is None or not part.streamed or kind.phase == catalogue.DONE:
                state.summary[position] = fresh = _Part(copy.deepcopy(new), "text")
                fresh.streamed = part is not None and part.streamed
            return
        part = self._part(state, state.summary, position, "summary_text")
        self._apply_text(state, part, kind, payload, f"summary[{position}].text")

    def _apply_text(
        self, state: _ItemState, part: _Part, kind: EventKind, payload: dict[str, Any], path: str
    ) -> None:
        if kind.phase == catalogue.DELTA:
            delta = _as_text(payload.get("delta"))
            if delta is None:
                self._note(f"output[{state.index}]: {kind.type} without a string delta")
                return
            if part.text is None:
                part.text = TextBuffer(part.value())
            part.text.append(delta)
            part.streamed = True
            return
        value = payload.get(kind.value_key or "")
        if not isinstance(value, str):
            return
        self._check(state, path, part, value, kind.type)
        part.text = TextBuffer(value)
        part.streamed = True

    def _check(self, state: _ItemState, path: str, part: _Part, final: Any, source: str) -> None:
        if part.streamed and isinstance(final, str) and part.value() != final:
            self._differs(state.index, path, source, part.value(), final)

    def _string(
        self, state: _ItemState, kind: EventKind, payload: dict[str, Any], key: str, path: str
    ) -> None:
        buffer = state.strings.get(key)
        if kind.phase == catalogue.DELTA:
            delta = _as_text(payload.get("delta"))
            if delta is None:
                return
            if buffer is None:
                initial = state.base.get(key)
                if key == "diff" and isinstance(state.base.get("operation"), dict):
                    initial = state.base["operation"].get("diff")
                state.strings[key] = buffer = TextBuffer(
                    initial if isinstance(initial, str) else ""
                )
            buffer.append(delta)
            return
        value = payload.get(kind.value_key or "")
        if not isinstance(value, str):
            return
        if buffer is not None and buffer.value() != value:
            self._differs(state.index, path, kind.type, buffer.value(), value)
        state.strings[key] = TextBuffer(value)

    def _command(self, state: _ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        position = _int(payload.get("command_index")) or 0
        if kind.phase == catalogue.DELTA:
            delta = _as_text(payload.get("delta"))
            if delta is not None:
                state.commands.setdefault(position, TextBuffer()).append(delta)
            return
        value = payload.get("command")
        if isinstance(value, str):
            old = state.commands.get(position)
            if kind.phase == catalogue.DONE and old is not None and old.value() != value:
                self._differs(
                    state.index, f"action.commands[{position}]", kind.type, old.value(), value
                )
            state.commands[position] = TextBuffer(value)

    def _shell_output_event(
        self, state: _ItemState, kind: EventKind, payload: dict[str, Any]
    ) -> None:
        position = _int(payload.get("command_index")) or 0
        if kind.phase == catalogue.DELTA:
            delta = payload.get("delta")
            entry = state.outputs.setdefault(
                position, {"stdout": TextBuffer(), "stderr": TextBuffer()}
            )
            if isinstance(delta, dict):
                for stream in ("stdout", "stderr"):
                    if isinstance(delta.get(stream), str):
                        entry[stream].append(delta[stream])
            return
        output = payload.get("output")
        if isinstance(output, list):
            # One entry: the final output of this command. Several: taken as the whole list.
            targets = {position: output[0]} if len(output) == 1 else dict(enumerate(output))
            for target, final in targets.items():
                if isinstance(final, dict):
                    state.outputs[target] = {"final": copy.deepcopy(final)}

    # -- reading ---------------------------------------------------------------------------

    def result(self) -> RebuiltOutput:
        """The output so far; safe to call mid-stream and again later."""
        mismatches = list(self._mismatches)
        items = [self._rebuilt(state) for _, state in sorted(self._items.items())]
        response = self._response
        final_output = response.get("output") if isinstance(response, dict) else None
        if isinstance(final_output, list):
            items = self._compare_final(items, final_output, mismatches)
        output = RebuiltOutput(
            format="responses",
            items=items,
            response=response,
            status=self._status,
            error=self._error,
            usage=response.get("usage")
            if isinstance(response, dict) and isinstance(response.get("usage"), dict)
            else None,
            response_id=_str((self._snapshot or {}).get("id")),
            model=_str((self._snapshot or {}).get("model")),
            unknown_types=list(self._unknown.items()),
            mismatches=mismatches,
            done_marker=self._done_marker,
            audio={k: v.value() for k, v in self._audio.items()} or None,
        )
        if self._chat is not None:
            self._chat.merge_into(output, responses_seen=bool(self._responses_events))
        output.output_text = output_text_of(output.items)
        return output

    def _rebuilt(self, state: _ItemState) -> RebuiltItem:
        item = state.materialize()
        status = item.get("status") if isinstance(item.get("status"), str) else state.status
        return RebuiltItem(
            output_index=state.index,
            type=state.type,
            id=_str(item.get("id")),
            status=status,
            item=item,
            done=state.done_item is not None,
            partial_images=dict(state.partial_images),
        )

    def _compare_final(
        self, items: list[RebuiltItem], final: list[Any], mismatches: list[str]
    ) -> list[RebuiltItem]:
        by_index = {item.output_index: item for item in items}
        for index, final_item in enumerate(final):
            if not isinstance(final_item, dict):
                continue
            ours = by_index.get(index)
            if ours is None:
                mismatches.append(
                    f"output[{index}]: not streamed; taken from the terminal response"
                )
                by_index[index] = RebuiltItem(
                    output_index=index,
                    type=_str(final_item.get("type")) or "unknown",
                    id=_str(final_item.get("id")),
                    status=_str(final_item.get("status")),
                    item=copy.deepcopy(final_item),
                    done=True,
                )
                continue
            for key in sorted(set(ours.item) | set(final_item)):
                mine, theirs = ours.item.get(key), final_item.get(key)
                if key in VOLATILE_KEYS and isinstance(mine, str) and isinstance(theirs, str):
                    continue
                if mine != theirs:
                    detail = ""
                    if key in ("id", "type", "status", "name", "call_id"):
                        detail = (
                            f" (streamed {ours.item.get(key)!r}, final {final_item.get(key)!r})"
                        )
                    mismatches.append(
                        f"output[{index}].{key} differs from the terminal response{detail}"
                    )
        for index in by_index:
            if index >= len(final):
                mismatches.append(
                    f"output[{index}]: streamed but absent from the terminal response"
                )
        return [by_index[index] for index in sorted(by_index)]


_HANDLERS = {
    catalogue.LIFECYCLE: OutputRebuilder._lifecycle,
    catalogue.TERMINAL: OutputRebuilder._terminal,
    catalogue.ERROR: OutputRebuilder._error_event,
    catalogue.ADDED: OutputRebuilder._item_event,
    catalogue.DELTA: OutputRebuilder._item_event,
    catalogue.DONE: OutputRebuilder._item_event,
    catalogue.PROGRESS: OutputRebuilder._item_event,
}


def rebuild_output(events: Iterable[tuple[str, Any]]) -> RebuiltOutput:
    """Rebuild the output of ``(type, payload)`` events given in order (Responses or Chat)."""
    rebuilder = OutputRebuilder()
    for event_type, payload in events:
        rebuilder.feed(event_type, payload)
    return rebuilder.result()


def output_text_of(items: Iterable[RebuiltItem]) -> str:
    """Like the SDK's ``Response.output_text``: every message's output_text parts, in order."""
    return "".join(item.text for item in items if item.type == "message")


def _shell_output(entry: dict[str, Any]) -> dict[str, Any]:
    if "final" in entry:
        return copy.deepcopy(entry["final"])
    return {"stdout": entry["stdout"].value(), "stderr": entry["stderr"].value()}


def _lookup(item: dict[str, Any], path: str) -> Any:
    """Follow ``content[0].text`` / ``action.commands[1]`` / ``arguments`` inside an item."""
    value: Any = item
    for step in path.split("."):
        name, _, rest = step.partition("[")
        value = value.get(name) if isinstance(value, dict) else None
        if rest:
            position = int(rest.rstrip("]"))
            value = value[position] if isinstance(value, list) and position < len(value) else None
    return value


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [entry for entry in value if isinstance(entry, dict)] if isinstance(value, list) else []


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _as_text(value: Any) -> str | None:
    """A delta's text: a string, or (older SDKs' reasoning deltas) an object with ``text``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    return None
