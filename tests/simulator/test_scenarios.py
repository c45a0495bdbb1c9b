"""The simulator's pure parts: scenarios as event lists, no server (simulator.*)."""

from __future__ import annotations

import base64
import copy
import json
import struct
import typing
import zlib
from collections import Counter

import pydantic
import pytest
from hypothesis import given
from hypothesis import strategies as st
from openai.types.responses import ResponseStreamEvent

from simulator import builders, chat, images, moderation, scripts
from simulator.builders import TEXT_DELTA_STANDIN, copy_json
from simulator.errors import SimulatorError
from simulator.pacing import encode_sse
from simulator.request import parse_request
from simulator.scenarios import (
    DEFAULT_SCENARIO,
    SCENARIOS,
    build_events,
    get_scenario,
    plan_response,
    scenario_ids,
)
from simulator.text import json_tokens, tokenize

SDK_CLASSES = {
    typing.get_args(cls.model_fields["type"].annotation)[0]: cls
    for cls in typing.get_args(typing.get_args(ResponseStreamEvent)[0])
}
STREAMED = [s.id for s in SCENARIOS if s.http_status is None]
BODY = {"input": "How do server-sent events work in the Responses API?"}
ALL_INCLUDES = [
    "reasoning.encrypted_content",
    "file_search_call.results",
    "code_interpreter_call.outputs",
]


def events_of(model: str, **body) -> list[dict]:
    return build_events(model, {**BODY, **body}, seed="test")


def test_default_scenario_is_first_and_every_id_is_unique():
    assert scenario_ids()[0] == DEFAULT_SCENARIO == "sim-text"
    assert len(set(scenario_ids())) == len(SCENARIOS)
    assert {s.outcome for s in SCENARIOS} == {
        "completed",
        "incomplete",
        "failed",
        "http_error",
        "dropped",
        "stalled",
    }


@pytest.mark.parametrize("model", STREAMED)
@pytest.mark.parametrize("background", [False, True])
def test_sequence_numbers_are_dense_from_zero(model, background):
    events = events_of(model, background=background)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] in ("response.completed", "response.incomplete", "response.failed")


@pytest.mark.parametrize("model", STREAMED)
def test_events_validate_against_the_sdk_models(model):
    """Every event the SDK knows validates against its SDK class, except documented wire facts."""
    for event in events_of(model, include=ALL_INCLUDES, top_logprobs=2, background=True):
        cls = SDK_CLASSES.get(event["type"])
        if cls is None or event["type"] == "error":
            # Unknown types and the nested error shape are deliberate (docs/events.md: unknown types, nested errors).
            continue
        if event.get("item", {}).get("type") == "web_search_call" and event["type"].endswith(
            "added"
        ):
            continue  # the real API adds web_search_call items without "action"
        if (
            event["type"] == "response.failed"
            and event["response"]["error"]["code"] == "insufficient_quota"
        ):
            continue  # a real code outside the SDK's enum
        cls.model_validate(event)


def test_scenarios_cover_every_event_type_of_the_sdk_union_and_an_unknown_one():
    seen = set()
    for model in STREAMED:
        for background in (False, True):
            seen |= {e["type"] for e in events_of(model, background=background)}
    assert set(SDK_CLASSES) <= seen
    assert {
        "response.apply_patch_call_operation_diff.delta",
        "response.apply_patch_call_operation_diff.done",
    } <= seen


@pytest.mark.parametrize("model", STREAMED)
def test_items_are_added_then_done_and_the_terminal_output_matches(model):
    events = events_of(model)
    added = {
        e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.added"
    }
    done = {
        e["output_index"]: e["item"] for e in events if e["type"] == "response.output_item.done"
    }
    terminal = events[-1]["response"]
    if terminal["status"] == "failed":
        assert terminal["output"] == [] and terminal["usage"] is None
        return
    assert sorted(added) == list(range(len(added))) == sorted(done)
    for index, item in done.items():
        assert (item["type"], item.get("id")) == (added[index]["type"], added[index].get("id"))
    assert terminal["output"] == [done[i] for i in sorted(done)]
    usage = terminal["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def test_same_seed_same_events_and_other_seed_other_events():
    first = build_events("sim-all-families", BODY, seed="42")
    assert json.dumps(first) == json.dumps(build_events("sim-all-families", BODY, seed="42"))
    assert build_events("sim-all-families", BODY, seed="43") != first


def test_without_a_seed_events_follow_the_input():
    assert build_events("sim-text", BODY) == build_events("sim-text", BODY)
    assert build_events("sim-text", BODY) != build_events(
        "sim-text", {"input": "Something else entirely"}
    )


def test_sim_tokens_sets_the_number_of_text_deltas():
    events = build_events("sim-text", {**BODY, "metadata": {"sim_tokens": "37"}})
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert len(deltas) == 37
    assert (
        "".join(d["delta"] for d in deltas)
        == events[-1]["response"]["output"][0]["content"][0]["text"]
    )
    assert events[-1]["response"]["usage"]["output_tokens"] == 37


def test_text_quotes_the_prompt_and_deltas_carry_obfuscation():
    events = events_of("sim-text")
    text = next(e["text"] for e in events if e["type"] == "response.output_text.done")
    assert "How do server-sent events work" in text
    deltas = [e for e in events if e["type"] == "response.output_text.delta"]
    assert all((len(d["delta"]) + len(d["obfuscation"])) % 16 == 0 for d in deltas)
    quiet = events_of("sim-text", stream_options={"include_obfuscation": False})
    assert not any("obfuscation" in e for e in quiet)


def test_small_max_output_tokens_ends_incomplete():
    events = build_events(
        "sim-text", {**BODY, "max_output_tokens": 16, "metadata": {"sim_tokens": "50"}}
    )
    terminal = events[-1]
    assert terminal["type"] == "response.incomplete"
    assert terminal["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert terminal["response"]["usage"]["output_tokens"] == 16
    assert terminal["response"]["output"][0]["status"] == "incomplete"


def test_incomplete_scenario_is_incomplete_even_with_a_generous_limit():
    assert events_of("sim-incomplete")[-1]["type"] == "response.incomplete"
    assert events_of("sim-incomplete", max_output_tokens=500)[-1]["type"] == "response.incomplete"


def test_failed_scenarios_use_the_real_nested_error_shape():
    for model, code in (
        ("sim-failed", "server_error"),
        ("sim-quota-exceeded", "insufficient_quota"),
    ):
        error, failed = events_of(model)[-2:]
        assert set(error) == {"type", "sequence_number", "error"}
        assert set(error["error"]) == {"type", "code", "message", "param"}
        assert error["error"]["code"] == code
        assert failed["type"] == "response.failed"
        assert failed["response"]["error"] == {"code": code, "message": error["error"]["message"]}


def test_background_starts_queued():
    created, queued, in_progress = events_of("sim-text", background=True)[:3]
    assert (created["type"], queued["type"], in_progress["type"]) == (
        "response.created",
        "response.queued",
        "response.in_progress",
    )
    assert created["response"]["status"] == queued["response"]["status"] == "queued"
    assert in_progress["response"]["status"] == "in_progress"


def test_request_fields_are_echoed():
    body = {
        **BODY,
        "instructions": "Be brief.",
        "temperature": 0.3,
        "metadata": {"sim_seed": "x", "k": "v"},
        "tools": [
            {
                "type": "function",
                "name": "lookup",
                "parameters": {"type": "object", "properties": {}},
            }
        ],
        "background": True,
        "max_output_tokens": 900,
    }
    response = build_events("sim-text", body)[-1]["response"]
    assert response["instructions"] == "Be brief."
    assert response["temperature"] == 0.3
    assert response["metadata"] == {"sim_seed": "x", "k": "v"}
    assert response["tools"][0]["name"] == "lookup" and response["tools"][0]["strict"] is True
    assert response["background"] is True and response["max_output_tokens"] == 900


def test_function_calls_use_request_tools_and_stream_valid_json():
    tools = [
        {
            "type": "function",
            "name": "get_stock",
            "parameters": {
                "type": "object",
                "properties": {"symbol": {"type": "string"}, "days": {"type": "integer"}},
            },
        }
    ]
    events = events_of("sim-function-calls", tools=tools)
    calls = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert len(calls) == 3 and {c["name"] for c in calls} == {"get_stock"}
    for call in calls:
        assert set(json.loads(call["arguments"])) == {"symbol", "days"}
    single = events_of("sim-function-calls", parallel_tool_calls=False)
    assert sum(e["type"] == "response.output_item.done" for e in single) == 1


def test_file_citation_annotation_sits_between_deltas():
    types = [e["type"] for e in events_of("sim-file-search")]
    at = types.index("response.output_text.annotation.added")
    assert types[at - 1] == types[at + 1] == "response.output_text.delta"


def test_partial_images_are_real_pngs_that_get_sharper():
    events = events_of(
        "sim-image-generation", tools=[{"type": "image_generation", "partial_images": 3}]
    )
    partials = [e["partial_image_b64"] for e in events if e["type"].endswith("partial_image")]
    final = next(e["item"]["result"] for e in events if e["type"] == "response.output_item.done")
    colours = [len(set(_png_pixels(base64.b64decode(image)))) for image in [*partials, final]]
    assert len(partials) == 3
    assert colours == sorted(colours) and colours[0] < colours[-1]


def _png_pixels(png: bytes) -> list[bytes]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    width, height = struct.unpack(">II", png[16:24])
    raw = zlib.decompress(png[png.index(b"IDAT") + 4 : png.index(b"IEND") - 8])
    stride = 1 + 3 * width
    return [
        raw[r * stride + 1 + 3 * x : r * stride + 4 + 3 * x]
        for r in range(height)
        for x in range(width)
    ]


def test_mcp_scenario_has_a_failed_call_and_a_failed_listing():
    counts = Counter(e["type"] for e in events_of("sim-mcp"))
    assert counts["response.mcp_call.failed"] == 1 and counts["response.mcp_call.completed"] == 1
    assert counts["response.mcp_list_tools.failed"] == 1


def test_http_error_scenarios_raise_with_openai_bodies():
    for model, status in (
        ("sim-http-400", 400),
        ("sim-http-401", 401),
        ("sim-http-429", 429),
        ("sim-http-500", 500),
    ):
        with pytest.raises(SimulatorError) as caught:
            build_events(model, BODY)
        assert caught.value.spec.status == status
        assert set(caught.value.spec.body()["error"]) == {"message", "type", "param", "code"}


def test_temperature_below_zero_is_rejected_like_the_real_api(recordings):
    with pytest.raises(SimulatorError) as caught:
        parse_request({"model": "sim-text", "input": "hi", "temperature": -1})
    recorded = json.loads((recordings / "http-400-error-body.json").read_text())
    assert caught.value.spec.status == 400
    assert caught.value.spec.body() == recorded


def test_unknown_model_is_a_400_model_not_found():
    with pytest.raises(SimulatorError) as caught:
        get_scenario("gpt-nonexistent")
    assert caught.value.spec.code == "model_not_found"


def test_dropped_scenario_plans_a_drop_half_way():
    plan = plan_response(
        parse_request({"model": "sim-dropped", "input": "hi", "metadata": {"sim_tokens": "40"}})
    )
    assert plan.drop_after == 24
    assert get_scenario("sim-stall").defaults["stall_ms"] >= 60_000


@given(st.text())
def test_tokenize_loses_nothing(text):
    assert "".join(tokenize(text)) == text


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_json_tokens_lose_nothing(value):
    serialised = json.dumps(value)
    assert "".join(json_tokens(serialised)) == serialised


def test_chat_chunks_end_with_usage_and_fold_into_a_completion():
    body = {
        "model": "sim-text",
        "messages": [{"role": "user", "content": "hello chat"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "metadata": {"sim_seed": "c", "sim_tokens": "9"},
    }
    chunks = [step.event for step in chat.plan_chat(body).steps]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 9
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    completion = chat.completion_from_chunks(chunks)
    deltas = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert completion["choices"][0]["message"]["content"] == deltas
    assert deltas.startswith(("You asked", "Here is", "About"))


def test_moderation_flags_listed_words_only():
    result = moderation.moderate({"input": ["a kind word", "I will kill it"]}, "x")
    assert [r["flagged"] for r in result["results"]] == [False, True]
    assert result["results"][1]["categories"]["violence"] is True
    assert set(result["results"][0]["category_scores"]) == set(moderation.CATEGORIES)


def test_png_encoder_writes_a_valid_file():
    png = images.encode_png([[(255, 0, 0), (0, 255, 0)], [(0, 0, 255), (255, 255, 255)]])
    assert _png_pixels(png) == [b"\xff\x00\x00", b"\x00\xff\x00", b"\x00\x00\xff", b"\xff\xff\xff"]


def test_every_scenario_event_is_one_line_json():
    for model in STREAMED:
        for event in events_of(model):
            assert "\n" not in json.dumps(event, ensure_ascii=False)


def test_sdk_event_payloads_roundtrip_for_unknown_types():
    """Unknown types still parse in the SDK (as the first union member) with the real type kept."""
    event = next(
        e for e in events_of("sim-apply-patch") if e["type"].startswith("response.apply_patch")
    )
    from openai._models import construct_type

    parsed = construct_type(type_=ResponseStreamEvent, value=event)
    assert parsed.type == event["type"]
    with pytest.raises(pydantic.ValidationError):
        SDK_CLASSES["response.audio.delta"].model_validate(
            {**event, "type": "response.audio.delta", "delta": 1}
        )


def test_a_response_copy_shares_nothing_mutable_and_equals_a_deep_copy():
    value = {"a": [1, 2.5, {"b": None, "c": True}], "d": "text", "e": {"f": []}, "g": ({"h": 1},)}
    copied = copy_json(value)
    assert copied == copy.deepcopy(value)
    copied["a"][2]["b"] = "changed"
    copied["e"]["f"].append(1)
    copied["g"][0]["h"] = 2  # not JSON-shaped (a tuple): deep-copied as deepcopy would
    assert value == {"a": [1, 2.5, {"b": None, "c": True}], "d": "text", "e": {"f": []}, "g": ({"h": 1},)}


class _SeenAnnotations(dict):
    """No annotation at any token, yet truthy: a text part with it takes the builder's general loop."""

    def __bool__(self) -> bool:
        return True


@pytest.mark.parametrize(("model", "body"), [
    ("sim-text", {"input": "What is SSE?"}), ("sim-text", {"input": "hi", "max_output_tokens": 30}),
    ("sim-text-multipart", {"input": "hi", "max_output_tokens": 40}), ("sim-incomplete", {"input": "hi"}),
])
def test_a_plain_text_part_streams_as_the_general_loop_would(model, body, monkeypatch):
    """Plain text parts (no logprobs or annotations) have a loop of their own (ResponseBuilder._plain_deltas):
    the same events, frames, token budget and random draws as the loop every other part takes."""

    def steps() -> list:
        plan = plan_response(parse_request({**body, "model": model, "metadata": {"sim_seed": "plain"}}))
        return [(step.event, step.pause, step.frame) for step in plan.steps] + [plan.builder.output_tokens]

    plain = steps()
    monkeypatch.setattr(scripts, "TextPart", lambda tokens, **fields: builders.TextPart(
        tokens, **{"annotations": _SeenAnnotations(), **fields}))
    general = steps()
    assert plain == general
    assert sum(event["type"] == "response.output_text.delta" for event, _pause, _frame in plain[:-1]) > 10


@pytest.mark.parametrize("model", ["sim-text", "sim-text-multipart", "sim-all-families", "sim-incomplete"])
def test_without_delta_events_a_plain_text_delta_is_its_frame_and_its_type(model):
    """What the server plans (plan_response(delta_events=False)): the same frames, and the same events but
    for the plain text deltas, whose event is a read-only stand-in holding only the type."""
    body = {"model": model, "input": "What is SSE?", "metadata": {"sim_seed": "standin"}}
    full = list(plan_response(parse_request(body)).steps)
    served = list(plan_response(parse_request(body), delta_events=False).steps)
    assert [(s.frame, s.pause) for s in served] == [(s.frame, s.pause) for s in full]
    standins = 0
    for whole, lean in zip(full, served, strict=True):
        if lean.event is TEXT_DELTA_STANDIN:
            standins += 1
            assert whole.event["type"] == "response.output_text.delta" and lean.frame == encode_sse(whole.event)
        else:
            assert lean.event == whole.event
    assert standins > (10 if model != "sim-all-families" else 0)  # all-families: mostly annotated text
    assert dict(TEXT_DELTA_STANDIN) == {"type": "response.output_text.delta"}
    with pytest.raises(TypeError):
        TEXT_DELTA_STANDIN["type"] = "changed"  # type: ignore[index]
