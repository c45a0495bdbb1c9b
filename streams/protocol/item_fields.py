"""One output item being rebuilt: its state, and how each of its field events updates it.

:class:`ItemFieldBuilder` applies content / summary / annotation / arguments / command / shell
output / partial image events to an :class:`ItemState`; :class:`streams.protocol.rebuild.OutputRebuilder`
decides which item an event belongs to and turns the states into :class:`RebuiltItem` records.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from streams.protocol import catalogue
from streams.protocol.catalogue import EventKind
from streams.protocol.output_model import ITEM_STRING_FIELDS, TextBuffer, dicts_in, int_or_none

PART_TYPES = {
    "text": ("output_text", "text"),
    "refusal": ("refusal", "refusal"),
    "reasoning_text": ("reasoning_text", "text"),
}


class PartState:
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


class ItemState:
    """An output item being rebuilt: its latest full value plus the fields streamed since."""

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
        self.content: dict[int, PartState] = {}
        self.summary: dict[int, PartState] = {}
        self.strings: dict[str, TextBuffer] = {}  # arguments / input / code / diff
        self.commands: dict[int, TextBuffer] = {}
        self.outputs: dict[int, dict[str, Any]] = {}
        self.partial_images: dict[int, str] = {}
        self.reset_base(base)

    def reset_base(self, base: dict[str, Any]) -> None:
        self.base = base
        for key, parts in (("content", self.content), ("summary", self.summary)):
            for position, part in enumerate(dicts_in(base.get(key))):
                if position not in parts:
                    text_key = "refusal" if part.get("type") == "refusal" else "text"
                    parts[position] = PartState(copy.deepcopy(part), text_key)

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


class ItemFieldBuilder:
    """Applies an item's field events to its :class:`ItemState`.

    A streamed value that disagrees with the full value that follows it is reported to ``note``
    (the rebuilder's list of mismatches); the full value wins.
    """

    def __init__(self, note: Callable[[str], None]) -> None:
        self._note = note

    def apply(self, state: ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        """One delta / done / part / progress event of the item ``state``."""
        if kind.phase == catalogue.PROGRESS:
            state.status = kind.item_status
        elif kind.field in PART_TYPES or kind.field == "part":
            self._content(state, kind, payload)
        elif kind.field in ("summary_text", "summary_part"):
            self._summary(state, kind, payload)
        elif kind.field == "annotation":
            part = self._part(state, state.content, int_or_none(payload.get("content_index")) or 0, "text")
            index = int_or_none(payload.get("annotation_index"))
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
            index = int_or_none(payload.get("partial_image_index"))
            image = payload.get("partial_image_b64")
            if isinstance(image, str):
                state.partial_images[index if index is not None else len(state.partial_images)] = (
                    image
                )

    def compare_done(self, state: ItemState, done: dict[str, Any]) -> None:
        """Note every streamed field that ``done`` (its output_item.done item) disagrees with."""
        for path, streamed in state.streamed_values().items():
            final = _lookup(done, path)
            if isinstance(final, str) and final != streamed:
                self._differs(state.index, path, "response.output_item.done", streamed, final)

    def _differs(self, index: int, path: str, source: str, streamed: str, final: str) -> None:
        self._note(
            f"output[{index}].{path}: {source} differs from the streamed value "
            f"({len(streamed)} chars streamed, {len(final)} in the full value; it wins)"
        )

    def _part(
        self, state: ItemState, parts: dict[int, PartState], position: int, field_name: str
    ) -> PartState:
        part = parts.get(position)
        if part is None:
            part_type, key = PART_TYPES.get(field_name, ("summary_text", "text"))
            base: dict[str, Any] = {"type": part_type, key: ""}
            if part_type == "output_text":
                base["annotations"] = []
            parts[position] = part = PartState(base, key)
        return part

    def _content(self, state: ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        position = int_or_none(payload.get("content_index")) or 0
        if kind.field == "part":
            new = payload.get("part")
            if not isinstance(new, dict):
                return
            key = "refusal" if new.get("type") == "refusal" else "text"
            part = state.content.get(position)
            if part is None or kind.phase == catalogue.ADDED:
                state.content[position] = fresh = PartState(copy.deepcopy(new), key)
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

    def _summary(self, state: ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        position = int_or_none(payload.get("summary_index")) or 0
        if kind.field == "summary_part":
            new = payload.get("part")
            if not isinstance(new, dict):
                return
            part = state.summary.get(position)
            if part is not None and kind.phase == catalogue.DONE:
                self._check(state, f"summary[{position}].text", part, new.get("text"), kind.type)
            if part is None or not part.streamed or kind.phase == catalogue.DONE:
                state.summary[position] = fresh = PartState(copy.deepcopy(new), "text")
                fresh.streamed = part is not None and part.streamed
            return
        part = self._part(state, state.summary, position, "summary_text")
        self._apply_text(state, part, kind, payload, f"summary[{position}].text")

    def _apply_text(
        self, state: ItemState, part: PartState, kind: EventKind, payload: dict[str, Any], path: str
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

    def _check(self, state: ItemState, path: str, part: PartState, final: Any, source: str) -> None:
        if part.streamed and isinstance(final, str) and part.value() != final:
            self._differs(state.index, path, source, part.value(), final)

    def _string(
        self, state: ItemState, kind: EventKind, payload: dict[str, Any], key: str, path: str
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

    def _command(self, state: ItemState, kind: EventKind, payload: dict[str, Any]) -> None:
        position = int_or_none(payload.get("command_index")) or 0
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
        self, state: ItemState, kind: EventKind, payload: dict[str, Any]
    ) -> None:
        position = int_or_none(payload.get("command_index")) or 0
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


def _as_text(value: Any) -> str | None:
    """A delta's text: a string, or (older SDKs' reasoning deltas) an object with ``text``."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    return None
