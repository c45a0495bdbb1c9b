"""The event catalogue knows every SDK type, older names, and never rejects a type."""

from __future__ import annotations

import json
import re
import typing

import pytest
from openai.types.responses import ResponseStreamEvent

from streams.protocol import catalogue
from streams.protocol.catalogue import (
    FAMILIES,
    FAMILY_NAMES,
    catalogue_json,
    describe,
    event_type_for,
)
from streams.protocol.metrics import TERMINAL_TYPES as METRICS_TERMINAL_TYPES
from streams.protocol.metrics import is_token_delta


def sdk_event_types() -> set[str]:
    """Every ``type`` literal of the installed SDK's ResponseStreamEvent union."""
    union = typing.get_args(ResponseStreamEvent)[0]  # Annotated[Union[...], PropertyInfo]
    types: set[str] = set()
    for cls in typing.get_args(union):
        literal = cls.model_fields["type"].annotation
        types.update(typing.get_args(literal))
    return types


def test_sdk_union_is_introspected():
    types = sdk_event_types()
    assert len(types) >= 59
    assert "response.output_text.delta" in types and "error" in types


@pytest.mark.parametrize("event_type", sorted(sdk_event_types()))
def test_every_sdk_type_is_known(event_type):
    kind = describe(event_type)
    assert kind.known
    assert kind.family not in ("unknown", "streamscope")
    assert kind.sdk


def test_sdk_types_match_the_union_exactly():
    # A new SDK adding types makes this fail, so the catalogue gets updated on purpose.
    assert catalogue.SDK_TYPES == sdk_event_types()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("response.code_interpreter_call.code.delta", "response.code_interpreter_call_code.delta"),
        ("response.code_interpreter_call.code.done", "response.code_interpreter_call_code.done"),
        ("response.output_text_annotation.added", "response.output_text.annotation.added"),
        ("response.mcp_call.arguments_delta", "response.mcp_call_arguments.delta"),
        ("response.mcp_call.arguments_done", "response.mcp_call_arguments.done"),
        ("response.reasoning.delta", "response.reasoning_text.delta"),
        ("response.reasoning.done", "response.reasoning_text.done"),
        ("response.reasoning_summary.delta", "response.reasoning_summary_text.delta"),
        ("response.reasoning_summary.done", "response.reasoning_summary_text.done"),
    ],
)
def test_historical_names_behave_like_their_successors(old, new):
    before, after = describe(old), describe(new)
    assert before.known and not before.sdk
    assert before.replaced_by == new
    assert old not in sdk_event_types()
    assert (before.family, before.phase, before.item_type, before.field) == (
        after.family,
        after.phase,
        after.item_type,
        after.field,
    )


def test_apply_patch_diff_is_known_but_not_in_the_sdk():
    delta = describe("response.apply_patch_call_operation_diff.delta")
    done = describe("response.apply_patch_call_operation_diff.done")
    assert delta.family == done.family == "apply_patch"
    assert delta.is_delta and not done.is_delta
    assert (delta.item_type, delta.field, done.value_key) == ("apply_patch_call", "diff", "diff")
    assert not delta.sdk


@pytest.mark.parametrize(
    ("event_type", "item_type", "field", "value_key"),
    [
        ("response.output_text.delta", "message", "text", "delta"),
        ("response.output_text.done", "message", "text", "text"),
        ("response.refusal.done", "message", "refusal", "refusal"),
        ("response.function_call_arguments.done", "function_call", "arguments", "arguments"),
        ("response.custom_tool_call_input.done", "custom_tool_call", "input", "input"),
        ("response.code_interpreter_call_code.done", "code_interpreter_call", "code", "code"),
        ("response.reasoning_summary_text.done", "reasoning", "summary_text", "text"),
        ("response.reasoning_text.delta", "reasoning", "reasoning_text", "delta"),
        ("response.mcp_call_arguments.done", "mcp_call", "arguments", "arguments"),
        ("response.shell_call_command.done", "shell_call", "command", "command"),
        ("response.shell_call_output_content.done", "shell_call_output", "output", "output"),
        (
            "response.image_generation_call.partial_image",
            "image_generation_call",
            "partial_image",
            "partial_image_b64",
        ),
    ],
)
def test_accumulation_targets(event_type, item_type, field, value_key):
    kind = describe(event_type)
    assert (kind.item_type, kind.field, kind.value_key) == (item_type, field, value_key)


def test_terminal_types_agree_with_metrics():
    terminal = {t for t, kind in catalogue.CATALOGUE.items() if kind.terminal}
    assert terminal == set(METRICS_TERMINAL_TYPES) == set(catalogue.TERMINAL_TYPES)
    assert not describe("error").terminal  # an error event is followed by response.failed


def test_every_dot_delta_type_is_a_delta():
    for event_type, kind in catalogue.CATALOGUE.items():
        if event_type.endswith(".delta"):
            assert kind.is_delta, event_type
        if is_token_delta(event_type):
            assert kind.is_delta, event_type


def test_unknown_types_are_kept_in_the_unknown_family():
    kind = describe("response.brand_new_thing.delta")
    assert kind.family == "unknown" and not kind.known
    assert kind.type == "response.brand_new_thing.delta"
    assert kind.colour == "dimgray"


def test_streamscope_prefix_is_ours():
    assert describe("streamscope.malformed").family == "streamscope"
    later = describe("streamscope.something_added_later")
    assert later.family == "streamscope" and later.known


def test_chat_chunk_family():
    assert describe("chat.completion.chunk").family == "chat"


def test_every_kind_uses_a_declared_family():
    for kind in catalogue.CATALOGUE.values():
        assert kind.family in FAMILY_NAMES, kind
    wanted = {
        "lifecycle",
        "error",
        "item",
        "content_part",
        "text",
        "annotation",
        "refusal",
        "function_call",
        "custom_tool",
        "reasoning_summary",
        "reasoning_text",
        "web_search",
        "file_search",
        "code_interpreter",
        "image_generation",
        "mcp",
        "shell",
        "compaction",
        "audio",
        "apply_patch",
        "chat",
        "streamscope",
        "unknown",
    }
    assert FAMILY_NAMES == wanted


def test_families_have_distinct_css_colour_names():
    colours = [family.colour for family in FAMILIES]
    assert len(set(colours)) == len(colours)
    assert all(re.fullmatch(r"[a-z]+", colour) for colour in colours)
    assert all(family.label for family in FAMILIES)


def test_catalogue_json_is_serialisable_and_complete():
    data = json.loads(json.dumps(catalogue_json()))
    assert [f["name"] for f in data["families"]] == [f.name for f in FAMILIES]
    assert set(data["types"]) == set(catalogue.CATALOGUE)
    entry = data["types"]["response.function_call_arguments.delta"]
    assert entry["family"] == "function_call" and entry["delta"] is True
    assert data["types"]["response.completed"]["terminal"] is True
    assert data["unknown_family"] == "unknown"


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"type": "response.created"}, "response.created"),
        ({"type": "response.future.event"}, "response.future.event"),
        ({"object": "chat.completion.chunk", "choices": []}, "chat.completion.chunk"),
        ({"error": {"message": "boom"}}, "error"),
        ({"hello": 1}, "streamscope.untyped"),
        ([1, 2], "streamscope.untyped"),
        (3, "streamscope.untyped"),
        ({"type": 7}, "streamscope.untyped"),
    ],
)
def test_event_type_for(payload, expected):
    assert event_type_for(payload) == expected


def test_event_type_for_falls_back_to_the_sse_event_name():
    assert event_type_for({"hello": 1}, "ping") == "ping"
    assert event_type_for({"type": "response.created"}, "other") == "response.created"


def test_every_type_in_the_recordings_is_known(recordings):
    for path in recordings.glob("*.sse"):
        for line in path.read_text().splitlines():
            if line.startswith("data: {"):
                event_type = json.loads(line[6:])["type"]
                assert describe(event_type).known, (path.name, event_type)
