"""Rebuild a run's output items (messages, reasoning, tool calls…) from its stored events.

Items are addressed by ``output_index`` (or ``item_id``), never by nesting, so interleaved
items (OpenRouter) and streams without ``sequence_number`` (early 2025) rebuild the same way.
Deltas build a field live; a ``.done`` / ``content_part.done`` / ``output_item.done`` carries the
full value, which wins — a disagreement is noted in ``mismatches``. The terminal response's
``output`` is compared at the end (and fills items the stream never showed). Chat Completions
chunks are rebuilt by :mod:`streams.protocol.chat_chunks` into the same :class:`RebuiltOutput` shape.
A non-streamed answer (one ``streamscope.response_body`` event, the gateway's) rebuilds as the
stream of the same answer would: a Response as its terminal event, a ``chat.completion`` as one chunk.

The records live in :mod:`streams.protocol.output_model`; how one item's fields are built from their events
lives in :mod:`streams.protocol.item_fields`.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable
from typing import Any

from streams.protocol import catalogue
from streams.protocol.catalogue import EventKind
from streams.protocol.chat_chunks import ChatAccumulator
from streams.protocol.item_fields import PART_TYPES, ItemFieldBuilder, ItemState
from streams.protocol.output_model import (
    ITEM_STRING_FIELDS,
    RebuiltItem,
    RebuiltOutput,
    StreamError,
    TextBuffer,
    int_or_none,
    str_or_none,
)

__all__ = [
    "DEFAULT_ERROR_MESSAGE",
    "ITEM_STRING_FIELDS",
    "PART_TYPES",
    "TERMINAL_STATUS",
    "VOLATILE_KEYS",
    "RESPONSE_BODY",
    "OutputRebuilder",
    "RebuiltItem",
    "RebuiltOutput",
    "StreamError",
    "TextBuffer",
    "chunk_of_completion",
    "output_text_of",
    "rebuild_output",
]

TERMINAL_STATUS = {
    "response.completed": "completed",
    "response.incomplete": "incomplete",
    "response.failed": "failed",
}
# A Response body's status -> the terminal event a stream of it ends with. Other statuses (queued,
# in_progress: a background request's answer; cancelled) have none: the body is only a snapshot.
BODY_TERMINALS = {status: event_type for event_type, status in TERMINAL_STATUS.items()}
# A non-streamed answer, stored whole as one event: its data is the JSON body as received
# (streams/gateway/recorder.py), or {"raw", "error"} when that was not a JSON object.
RESPONSE_BODY = "streamscope.response_body"
DEFAULT_ERROR_MESSAGE = "An error occurred during streaming"
# Re-encrypted between output_item.done and the terminal response (Fernet tokens carry a
# timestamp), so only their presence is compared.
VOLATILE_KEYS = frozenset({"encrypted_content"})


class OutputRebuilder:
    """Feed events in order with :meth:`feed`; read the output so far with :meth:`result`."""

    def __init__(self) -> None:
        self._items: dict[int, ItemState] = {}
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
        self._chat: Any = None  # streams.protocol.chat_chunks.ChatAccumulator once a chunk arrives
        self._fields = ItemFieldBuilder(self._note)

    # -- feeding ---------------------------------------------------------------------------

    def feed(self, event_type: str, payload: Any) -> None:
        kind = catalogue.describe(event_type)
        if not kind.known:
            self._unknown[event_type] += 1
            return
        if kind.family == "streamscope":
            if event_type == catalogue.DONE_MARKER:
                self._done_marker = True
            elif event_type == RESPONSE_BODY:
                self._response_body(payload)
            return
        if not isinstance(payload, dict):
            self._note(f"{event_type}: payload is not a JSON object; ignored")
            return
        if kind.phase == catalogue.CHUNK:
            if self._chat is None:
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
                message=str_or_none(source.get("message")) or "the response failed",
                code=str_or_none(source.get("code")),
                type=str_or_none(source.get("type")),
                param=str_or_none(source.get("param")),
                source=kind.type,
                body=error,
            )

    def _response_body(self, body: Any) -> None:
        """A whole answer: its items as if each arrived by output_item.done, then its terminal event
        (a Response), or one chunk holding the whole message (a chat.completion)."""
        if isinstance(body, dict) and body.get("object") == "chat.completion":
            if self._chat is None:
                self._chat = ChatAccumulator()
            self._chat.feed(chunk_of_completion(body))
            return
        if not isinstance(body, dict) or (
            body.get("object") != "response" and not isinstance(body.get("output"), list)
        ):
            self._note(f"{RESPONSE_BODY}: neither a Response nor a chat.completion; not rebuilt")
            return
        self._responses_events += 1
        output = body.get("output")
        for index, item in enumerate(output if isinstance(output, list) else []):
            if not isinstance(item, dict) or index in self._items:
                continue
            state = self._items[index] = ItemState(index, copy.deepcopy(item), added=False)
            state.done_item = copy.deepcopy(item)
            if isinstance(item.get("id"), str):
                self._index_by_id[item["id"]] = index
        status = body.get("status")
        terminal = BODY_TERMINALS.get(status) if isinstance(status, str) else None
        if terminal is not None:
            self._terminal(catalogue.describe(terminal), {"response": body})
        else:
            self._snapshot = body

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
            message=str_or_none(source.get("message")) or DEFAULT_ERROR_MESSAGE,
            code=str_or_none(source.get("code")),
            type=str_or_none(source.get("type")) if source is nested else None,
            param=str_or_none(source.get("param")),
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
        self._fields.apply(state, kind, payload)

    def _output_item(self, kind: EventKind, payload: dict[str, Any]) -> None:
        item = payload.get("item")
        index = int_or_none(payload.get("output_index"))
        if not isinstance(item, dict):
            self._note(f"{kind.type} without an item object")
            return
        if index is None:
            index = self._index_by_id.get(str_or_none(item.get("id")) or "", len(self._items))
        item = copy.deepcopy(item)
        state = self._items.get(index)
        if kind.phase == catalogue.ADDED:
            if state is None:
                self._items[index] = state = ItemState(index, item, added=True)
            else:
                if state.added:
                    self._note(f"output[{index}]: output_item.added twice")
                state.added = True
                state.reset_base(item)
        else:
            if state is None:
                self._items[index] = state = ItemState(index, item, added=False)
            else:
                self._fields.compare_done(state, item)
                if state.added and state.base.get("id") != item.get("id"):
                    self._note(
                        f"output[{index}]: id changed from {state.base.get('id')!r} "
                        f"(added) to {item.get('id')!r} (done)"
                    )
            state.done_item = item
        if isinstance(item.get("id"), str):
            self._index_by_id[item["id"]] = index

    def _locate(self, kind: EventKind, payload: dict[str, Any]) -> ItemState | None:
        index = int_or_none(payload.get("output_index"))
        item_id = str_or_none(payload.get("item_id"))
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
            self._items[index] = state = ItemState(index, base, added=False)
            self._note(f"output[{index}]: {kind.type} before its output_item.added")
        return state

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
            response_id=str_or_none((self._snapshot or {}).get("id")),
            model=str_or_none((self._snapshot or {}).get("model")),
            unknown_types=list(self._unknown.items()),
            mismatches=mismatches,
            done_marker=self._done_marker,
            audio={k: v.value() for k, v in self._audio.items()} or None,
        )
        if self._chat is not None:
            self._chat.merge_into(output, responses_seen=bool(self._responses_events))
        output.output_text = output_text_of(output.items)
        return output

    def _rebuilt(self, state: ItemState) -> RebuiltItem:
        item = state.materialize()
        status = item.get("status") if isinstance(item.get("status"), str) else state.status
        return RebuiltItem(
            output_index=state.index,
            type=state.type,
            id=str_or_none(item.get("id")),
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
                    type=str_or_none(final_item.get("type")) or "unknown",
                    id=str_or_none(final_item.get("id")),
                    status=str_or_none(final_item.get("status")),
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


def chunk_of_completion(body: dict[str, Any]) -> dict[str, Any]:
    """A ``chat.completion`` as the one ``chat.completion.chunk`` that streams it whole: each
    choice's message becomes its delta (tool calls without ``index`` take their position)."""
    choices = body.get("choices")
    return {
        "object": catalogue.CHAT_CHUNK,
        "id": body.get("id"),
        "model": body.get("model"),
        "usage": body.get("usage"),
        "choices": [
            {
                "index": choice.get("index"),
                "delta": choice.get("message"),
                "logprobs": choice.get("logprobs"),
                "finish_reason": choice.get("finish_reason"),
            }
            for choice in (choices if isinstance(choices, list) else [])
            if isinstance(choice, dict)
        ],
    }


def output_text_of(items: Iterable[RebuiltItem]) -> str:
    """Like the SDK's ``Response.output_text``: every message's output_text parts, in order."""
    return "".join(item.text for item in items if item.type == "message")
