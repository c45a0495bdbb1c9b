"""The event catalogue: every event ``type`` Streamscope knows, its family, and what it does.

This is the one place that knows the Responses API event vocabulary (SDK 3.57.0's 59 types,
older names from earlier SDKs, types seen on the wire but in no SDK), plus Chat Completions
chunks and Streamscope's own synthetic ``streamscope.*`` types. Everything else — the rebuild,
the timeline colours, metrics labels — asks :func:`describe`. Unknown types are never an error:
they map to the ``unknown`` family and are kept like any other event.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any


@dataclass(frozen=True, slots=True)
class Family:
    """A group of event types shown alike (one label, one colour on the timeline)."""

    name: str
    label: str
    colour: str  # a CSS colour name, readable on light and dark backgrounds


FAMILIES: list[Family] = [
    Family("lifecycle", "Lifecycle", "slategray"),
    Family("error", "Error", "crimson"),
    Family("item", "Output item", "steelblue"),
    Family("content_part", "Content part", "cadetblue"),
    Family("text", "Output text", "seagreen"),
    Family("annotation", "Annotation", "olivedrab"),
    Family("refusal", "Refusal", "orangered"),
    Family("function_call", "Function call", "darkorange"),
    Family("custom_tool", "Custom tool call", "chocolate"),
    Family("reasoning_summary", "Reasoning summary", "mediumpurple"),
    Family("reasoning_text", "Reasoning text", "rebeccapurple"),
    Family("web_search", "Web search", "dodgerblue"),
    Family("file_search", "File search", "teal"),
    Family("code_interpreter", "Code interpreter", "goldenrod"),
    Family("image_generation", "Image generation", "hotpink"),
    Family("mcp", "MCP", "sienna"),
    Family("shell", "Shell", "darkkhaki"),
    Family("compaction", "Compaction", "rosybrown"),
    Family("audio", "Audio", "orchid"),
    Family("apply_patch", "Apply patch", "peru"),
    Family("chat", "Chat completion chunk", "mediumseagreen"),
    Family("streamscope", "Streamscope", "gray"),
    Family("unknown", "Unknown", "dimgray"),
]
FAMILY_NAMES = frozenset(family.name for family in FAMILIES)

# Phases: what an event does to the output being rebuilt.
LIFECYCLE = "lifecycle"  # carries a response snapshot
TERMINAL = "terminal"  # carries the final response; the stream is over
ERROR = "error"
ADDED = "added"  # a new item / part / annotation / command starts
DELTA = "delta"  # appends to a field
DONE = "done"  # carries the full value of a field (it wins over the deltas)
PROGRESS = "progress"  # a hosted tool announces a status
CHUNK = "chunk"  # a Chat Completions chunk
MARKER = "marker"  # a Streamscope synthetic event
OTHER = "other"


@dataclass(frozen=True, slots=True)
class EventKind:
    """What one event ``type`` means.

    ``field`` names what a delta/done/added event accumulates into, inside ``item_type``:
    ``text`` / ``refusal`` / ``reasoning_text`` (a content part at ``content_index``),
    ``summary_text`` and ``summary_part`` (``summary[summary_index]``), ``arguments`` /
    ``input`` / ``code`` (a string on the item), ``command`` (``action.commands[command_index]``),
    ``output`` (``output[command_index]`` of a shell_call_output), ``diff`` (``operation.diff``),
    ``partial_image``, ``annotation``, ``part``, ``item``, ``audio``, ``transcript``.
    ``value_key`` is the payload key holding the value (the delta is always ``delta``).
    """

    type: str
    family: str
    phase: str = OTHER
    item_type: str | None = None
    field: str | None = None
    value_key: str | None = None
    item_status: str | None = None  # progress events: the item status they announce
    terminal: bool = False
    known: bool = True
    sdk: bool = False  # in the union of the SDK version the catalogue was written against
    replaced_by: str | None = None  # for historical names: today's type

    @property
    def is_delta(self) -> bool:
        return self.phase == DELTA

    @property
    def colour(self) -> str:
        return _FAMILY_BY_NAME[self.family].colour

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["is_delta"] = self.is_delta
        return data


_FAMILY_BY_NAME = {family.name: family for family in FAMILIES}

CHAT_CHUNK = "chat.completion.chunk"
DONE_MARKER = "streamscope.done"  # an SSE `data: [DONE]` line; data {"raw": "[DONE]"}
MALFORMED = "streamscope.malformed"  # data that is not JSON; data {"raw", "error", ...}
UNTYPED = "streamscope.untyped"  # JSON without a string `type` (and not a chat chunk)

_ = None  # a blank cell
# One row per type: (type, family, phase, item_type, field, value_key, item_status).
# fmt: off
_SDK_ROWS = [  # the 59 types of openai 3.57.0's ResponseStreamEvent union
    ("response.created",                         "lifecycle", LIFECYCLE, _, "response", "response", _),
    ("response.queued",                          "lifecycle", LIFECYCLE, _, "response", "response", _),
    ("response.in_progress",                     "lifecycle", LIFECYCLE, _, "response", "response", _),
    ("response.completed",                       "lifecycle", TERMINAL, _, "response", "response", _),
    ("response.failed",                          "lifecycle", TERMINAL, _, "response", "response", _),
    ("response.incomplete",                      "lifecycle", TERMINAL, _, "response", "response", _),
    ("error",                                    "error", ERROR, _, _, _, _),
    ("response.output_item.added",               "item", ADDED, _, "item", "item", _),
    ("response.output_item.done",                "item", DONE, _, "item", "item", _),
    ("response.content_part.added",              "content_part", ADDED, "message", "part", "part", _),
    ("response.content_part.done",               "content_part", DONE, "message", "part", "part", _),
    ("response.output_text.delta",               "text", DELTA, "message", "text", "delta", _),
    ("response.output_text.done",                "text", DONE, "message", "text", "text", _),
    ("response.output_text.annotation.added",    "annotation", ADDED, "message", "annotation", "annotation", _),
    ("response.refusal.delta",                   "refusal", DELTA, "message", "refusal", "delta", _),
    ("response.refusal.done",                    "refusal", DONE, "message", "refusal", "refusal", _),
    ("response.function_call_arguments.delta",   "function_call", DELTA, "function_call", "arguments", "delta", _),
    ("response.function_call_arguments.done",    "function_call", DONE, "function_call", "arguments", "arguments", _),
    ("response.custom_tool_call_input.delta",    "custom_tool", DELTA, "custom_tool_call", "input", "delta", _),
    ("response.custom_tool_call_input.done",     "custom_tool", DONE, "custom_tool_call", "input", "input", _),
    ("response.reasoning_summary_part.added",    "reasoning_summary", ADDED, "reasoning", "summary_part", "part", _),
    ("response.reasoning_summary_part.done",     "reasoning_summary", DONE, "reasoning", "summary_part", "part", _),
    ("response.reasoning_summary_text.delta",    "reasoning_summary", DELTA, "reasoning", "summary_text", "delta", _),
    ("response.reasoning_summary_text.done",     "reasoning_summary", DONE, "reasoning", "summary_text", "text", _),
    ("response.reasoning_text.delta",            "reasoning_text", DELTA, "reasoning", "reasoning_text", "delta", _),
    ("response.reasoning_text.done",             "reasoning_text", DONE, "reasoning", "reasoning_text", "text", _),
    ("response.web_search_call.in_progress",     "web_search", PROGRESS, "web_search_call", _, _, "in_progress"),
    ("response.web_search_call.searching",       "web_search", PROGRESS, "web_search_call", _, _, "searching"),
    ("response.web_search_call.completed",       "web_search", PROGRESS, "web_search_call", _, _, "completed"),
    ("response.file_search_call.in_progress",    "file_search", PROGRESS, "file_search_call", _, _, "in_progress"),
    ("response.file_search_call.searching",      "file_search", PROGRESS, "file_search_call", _, _, "searching"),
    ("response.file_search_call.completed",      "file_search", PROGRESS, "file_search_call", _, _, "completed"),
    ("response.code_interpreter_call.in_progress", "code_interpreter", PROGRESS, "code_interpreter_call", _, _,
     "in_progress"),
    ("response.code_interpreter_call_code.delta", "code_interpreter", DELTA, "code_interpreter_call", "code", "delta",
     _),
    ("response.code_interpreter_call_code.done", "code_interpreter", DONE, "code_interpreter_call", "code", "code", _),
    ("response.code_interpreter_call.interpreting", "code_interpreter", PROGRESS, "code_interpreter_call", _, _,
     "interpreting"),
    ("response.code_interpreter_call.completed", "code_interpreter", PROGRESS, "code_interpreter_call", _, _,
     "completed"),
    ("response.image_generation_call.in_progress", "image_generation", PROGRESS, "image_generation_call", _, _,
     "in_progress"),
    ("response.image_generation_call.generating", "image_generation", PROGRESS, "image_generation_call", _, _,
     "generating"),
    ("response.image_generation_call.partial_image", "image_generation", DELTA, "image_generation_call",
     "partial_image", "partial_image_b64", _),
    ("response.image_generation_call.completed", "image_generation", PROGRESS, "image_generation_call", _, _,
     "completed"),
    ("response.mcp_list_tools.in_progress",      "mcp", PROGRESS, "mcp_list_tools", _, _, "in_progress"),
    ("response.mcp_list_tools.completed",        "mcp", PROGRESS, "mcp_list_tools", _, _, "completed"),
    ("response.mcp_list_tools.failed",           "mcp", PROGRESS, "mcp_list_tools", _, _, "failed"),
    ("response.mcp_call.in_progress",            "mcp", PROGRESS, "mcp_call", _, _, "in_progress"),
    ("response.mcp_call_arguments.delta",        "mcp", DELTA, "mcp_call", "arguments", "delta", _),
    ("response.mcp_call_arguments.done",         "mcp", DONE, "mcp_call", "arguments", "arguments", _),
    ("response.mcp_call.completed",              "mcp", PROGRESS, "mcp_call", _, _, "completed"),
    ("response.mcp_call.failed",                 "mcp", PROGRESS, "mcp_call", _, _, "failed"),
    ("response.shell_call_command.added",        "shell", ADDED, "shell_call", "command", "command", _),
    ("response.shell_call_command.delta",        "shell", DELTA, "shell_call", "command", "delta", _),
    ("response.shell_call_command.done",         "shell", DONE, "shell_call", "command", "command", _),
    ("response.shell_call_output_content.delta", "shell", DELTA, "shell_call_output", "output", "delta", _),
    ("response.shell_call_output_content.done",  "shell", DONE, "shell_call_output", "output", "output", _),
    ("response.compaction.compacting",           "compaction", PROGRESS, "compaction", _, _, "compacting"),
    # Audio belongs to the response, not to an item; its done events carry no value.
    ("response.audio.delta",                     "audio", DELTA, _, "audio", "delta", _),
    ("response.audio.done",                      "audio", DONE, _, "audio", _, _),
    ("response.audio.transcript.delta",          "audio", DELTA, _, "transcript", "delta", _),
    ("response.audio.transcript.done",           "audio", DONE, _, "transcript", _, _),
]
# Names older SDKs knew, with today's name; replayed recordings carry them.
_HISTORICAL_ROWS = {
    "response.code_interpreter_call.code.delta": "response.code_interpreter_call_code.delta",
    "response.code_interpreter_call.code.done": "response.code_interpreter_call_code.done",
    "response.output_text_annotation.added": "response.output_text.annotation.added",
    "response.mcp_call.arguments_delta": "response.mcp_call_arguments.delta",
    "response.mcp_call.arguments_done": "response.mcp_call_arguments.done",
    "response.reasoning.delta": "response.reasoning_text.delta",
    "response.reasoning.done": "response.reasoning_text.done",
    "response.reasoning_summary.delta": "response.reasoning_summary_text.delta",
    "response.reasoning_summary.done": "response.reasoning_summary_text.done",
}
_OTHER_ROWS = [
    # Seen on the wire (gpt-5.1's apply_patch tool) but in no SDK union nor the spec.
    ("response.apply_patch_call_operation_diff.delta", "apply_patch", DELTA, "apply_patch_call", "diff", "delta", _),
    ("response.apply_patch_call_operation_diff.done", "apply_patch", DONE, "apply_patch_call", "diff", "diff", _),
    (CHAT_CHUNK,                                 "chat", CHUNK, _, _, _, _),
    (DONE_MARKER,                                "streamscope", MARKER, _, _, _, _),
    (MALFORMED,                                  "streamscope", MARKER, _, _, _, _),
    (UNTYPED,                                    "streamscope", MARKER, _, _, _, _),
]
# fmt: on


def _kind(row: tuple, sdk: bool = False, replaced_by: str | None = None) -> EventKind:
    event_type, family, phase, item_type, field, value_key, item_status = row
    return EventKind(
        event_type,
        family,
        phase,
        item_type,
        field,
        value_key,
        item_status,
        terminal=phase == TERMINAL,
        sdk=sdk,
        replaced_by=replaced_by,
    )


_SDK = [_kind(row, sdk=True) for row in _SDK_ROWS]
_BY_SDK_TYPE = {kind.type: kind for kind in _SDK}
_HISTORICAL = [
    EventKind(**{**asdict(_BY_SDK_TYPE[new]), "type": old, "sdk": False, "replaced_by": new})
    for old, new in _HISTORICAL_ROWS.items()
]
del _

CATALOGUE: dict[str, EventKind] = {
    kind.type: kind for kind in (*_SDK, *_HISTORICAL, *(_kind(row) for row in _OTHER_ROWS))
}
SDK_TYPES = frozenset(kind.type for kind in _SDK)
TERMINAL_TYPES = frozenset(kind.type for kind in _SDK if kind.terminal)
STREAMSCOPE_PREFIX = "streamscope."


@lru_cache(maxsize=1024)
def describe(event_type: str) -> EventKind:
    """The kind of ``event_type``; unknown types get family ``unknown`` (never an error).

    Any ``streamscope.*`` type is ours, so it is known (family ``streamscope``) even when this
    table does not list it: other modules may add synthetic markers without editing it.
    """
    kind = CATALOGUE.get(event_type)
    if kind is not None:
        return kind
    if event_type.startswith(STREAMSCOPE_PREFIX):
        return EventKind(event_type, "streamscope", MARKER)
    return EventKind(event_type, "unknown", known=False)


def event_type_for(payload: Any, event_name: str = "") -> str:
    """The ``type`` to store for one decoded JSON payload (``event_name``: its SSE ``event:``).

    Responses events carry ``type``; Chat Completions chunks carry ``object``; a bare
    ``{"error": {...}}`` (what some servers send mid-stream) is an ``error``; otherwise the
    SSE event name if there was one, else ``streamscope.untyped``.
    """
    if isinstance(payload, dict):
        value = payload.get("type")
        if isinstance(value, str) and value:
            return value[:200]  # Event.type's max_length
        if payload.get("object") == CHAT_CHUNK:
            return CHAT_CHUNK
        if "error" in payload:
            return "error"
    return event_name[:200] if event_name else UNTYPED


def catalogue_json() -> dict[str, Any]:
    """The whole table for the front end: families (label, colour) and every known type."""
    return {
        "families": [asdict(family) for family in FAMILIES],
        "types": {
            kind.type: {
                "family": kind.family,
                "phase": kind.phase,
                "delta": kind.is_delta,
                "terminal": kind.terminal,
                "item_type": kind.item_type,
                "field": kind.field,
                "sdk": kind.sdk,
                "replaced_by": kind.replaced_by,
            }
            for kind in CATALOGUE.values()
        },
        "prefixes": {STREAMSCOPE_PREFIX: "streamscope"},
        "unknown_family": "unknown",
    }
