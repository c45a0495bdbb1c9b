"""Rebuilding output items from events: every real recording, then each item kind and quirk."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from openai.types.responses import Response

from streams.protocol.catalogue import event_type_for
from streams.protocol.rebuild import OutputRebuilder, rebuild_output
from streams.protocol.sse import SSEDecoder

RECORDING_NAMES = [
    "background-resume-starting-after-0.sse",
    "background-stream.sse",
    "error-event-then-failed.sse",
    "file-search-with-citation.sse",
    "function-call-2025-03-no-sequence-numbers.sse",
    "incomplete-max-output-tokens.sse",
    "openrouter-reasoning-text-and-done-marker.sse",
    "reasoning-summary-then-text.sse",
    "text-with-logprobs.sse",
    "web-search-with-reasoning.sse",
]
# OpenRouter's terminal response names the reasoning item differently from the stream.
KNOWN_FINAL_DIFFERENCES = {
    "openrouter-reasoning-text-and-done-marker.sse": [
        (
            "output[0].id differs from the terminal response "
            "(streamed 'rs_tmp_2kbe7x16sax', final 'rs_tmp_ku4i7pagjwn')"
        )
    ],
}
DONE_TYPES = ("done", "response.content_part.done", "response.output_item.done")


def read_events(path: Path) -> list[tuple[str, object]]:
    """(type, payload) pairs of a recording, decoded independently of streams.history.importer."""
    decoder = SSEDecoder()
    frames = decoder.feed(path.read_bytes()) + decoder.close()[0]
    events: list[tuple[str, object]] = []
    for frame in frames:
        if frame.data == "[DONE]":
            events.append(("streamscope.done", {"raw": "[DONE]"}))
        else:
            payload = json.loads(frame.data)
            events.append((event_type_for(payload), payload))
    return events


def terminal_response(events) -> dict | None:
    for event_type, payload in reversed(events):
        if event_type in ("response.completed", "response.incomplete", "response.failed"):
            return payload["response"]
    return None


def without_encrypted(item: dict) -> dict:
    return {k: v for k, v in item.items() if k != "encrypted_content"}


def test_the_list_covers_every_recording(recordings):
    assert sorted(p.name for p in recordings.glob("*.sse")) == sorted(RECORDING_NAMES)


@pytest.mark.parametrize("name", RECORDING_NAMES)
def test_rebuild_matches_the_terminal_response(recordings, name):
    events = read_events(recordings / name)
    final = terminal_response(events)
    result = rebuild_output(events)

    assert final is not None
    assert result.response == final
    assert result.mismatches == KNOWN_FINAL_DIFFERENCES.get(name, [])
    assert [i.output_index for i in result.items] == list(range(len(final["output"])))
    for rebuilt, expected in zip(result.items, final["output"], strict=True):
        assert rebuilt.type == expected["type"]
        assert rebuilt.status == expected.get("status")
        assert rebuilt.done
        if name in KNOWN_FINAL_DIFFERENCES and rebuilt.output_index == 0:
            assert rebuilt.id != expected["id"]
            expected = {**expected, "id": rebuilt.id}
        assert rebuilt.id == expected["id"]
        assert without_encrypted(rebuilt.item) == without_encrypted(expected)
    # The SDK's own Response.output_text over the terminal object is the oracle.
    assert result.output_text == Response.construct(**final).output_text
    assert result.usage == final.get("usage")
    assert result.response_id == final["id"]
    assert result.unknown_types == []
    json.dumps(result.to_json())


@pytest.mark.parametrize("name", RECORDING_NAMES)
def test_deltas_alone_rebuild_the_same_content(recordings, name):
    """Drop every .done, part-done, item-done and terminal event: the deltas must suffice."""
    events = read_events(recordings / name)
    final = terminal_response(events)
    live = [
        (t, p)
        for t, p in events
        if not t.endswith(DONE_TYPES)
        and t not in ("response.completed", "response.incomplete", "response.failed")
    ]
    result = rebuild_output(live)

    assert result.status is None and result.response is None
    assert not any(item.done for item in result.items)
    assert [(i.type, i.id) for i in result.items] == [
        (o["type"], o["id"]) for o in final["output"]
    ] or name in KNOWN_FINAL_DIFFERENCES
    assert result.output_text == Response.construct(**final).output_text
    for rebuilt, expected in zip(result.items, final["output"], strict=True):
        assert rebuilt.text == _text_of(expected), rebuilt.output_index
        if expected["type"] == "function_call":
            assert rebuilt.item["arguments"] == expected["arguments"]
            assert rebuilt.item["name"] == expected["name"]
            assert rebuilt.item["call_id"] == expected["call_id"]
        if expected["type"] == "message":
            for ours, theirs in zip(rebuilt.item["content"], expected["content"], strict=True):
                assert ours["annotations"] == theirs["annotations"]
                ours_lp, theirs_lp = ours.get("logprobs") or [], theirs.get("logprobs") or []
                assert [lp["token"] for lp in ours_lp] == [lp["token"] for lp in theirs_lp]
                # The item-done values are rounded; the deltas carry the precise ones.
                for a, b in zip(ours_lp, theirs_lp, strict=True):
                    assert a["logprob"] == pytest.approx(b["logprob"], abs=1e-5)
        if expected["type"] == "reasoning":
            assert [s["text"] for s in rebuilt.item.get("summary", [])] == [
                s["text"] for s in expected["summary"]
            ]


def _text_of(item: dict) -> str:
    if item["type"] == "message":
        return "".join(p["text"] for p in item["content"] if p["type"] == "output_text")
    if item["type"] == "reasoning":
        parts = item.get("summary", []) + item.get("content", [])
        return "\n\n".join(p["text"] for p in parts)
    return item.get("arguments") or item.get("input") or item.get("code") or ""


def test_failed_stream_gives_the_nested_error(recordings):
    result = rebuild_output(read_events(recordings / "error-event-then-failed.sse"))
    assert result.status == "failed"
    assert result.items == []
    assert result.error is not None
    assert result.error.message.startswith("You exceeded your current quota")
    assert (result.error.code, result.error.type, result.error.source) == (
        "insufficient_quota",
        "insufficient_quota",
        "error",
    )
    assert result.usage is None


def test_flat_error_shape_is_understood():
    result = rebuild_output(
        [
            (
                "error",
                {
                    "type": "error",
                    "code": "ERR_SOMETHING",
                    "message": "Something went wrong",
                    "param": None,
                    "sequence_number": 1,
                },
            ),
        ]
    )
    assert result.error.message == "Something went wrong"
    assert result.error.code == "ERR_SOMETHING"
    assert result.error.type is None
    assert result.status is None  # an error event alone is not terminal


def test_response_failed_alone_gives_its_error():
    result = rebuild_output(
        [
            (
                "response.failed",
                {
                    "type": "response.failed",
                    "response": {
                        "id": "resp_1",
                        "status": "failed",
                        "output": [],
                        "error": {"code": "server_error", "message": "The server had an error"},
                    },
                },
            ),
        ]
    )
    assert result.status == "failed"
    assert result.error.message == "The server had an error"
    assert result.error.code == "server_error"
    assert result.error.source == "response.failed"


def test_incomplete_stream(recordings):
    result = rebuild_output(read_events(recordings / "incomplete-max-output-tokens.sse"))
    assert result.status == "incomplete"
    assert result.response["incomplete_details"] == {"reason": "max_output_tokens"}
    assert result.usage["output_tokens"] == 64
    assert result.error is None


def test_function_call_without_sequence_numbers(recordings):
    events = read_events(recordings / "function-call-2025-03-no-sequence-numbers.sse")
    assert all("sequence_number" not in payload for _, payload in events)
    (item,) = rebuild_output(events).items
    assert item.type == "function_call"
    assert item.item["name"] == "get_capital"
    assert item.item["call_id"] == "call_kL0PCQV7M2WMoVX8V8OtYSAL"
    assert item.item["arguments"] == '{"country":"France"}'
    assert item.text == '{"country":"France"}'


def test_openrouter_interleaved_items_and_done_marker(recordings):
    result = rebuild_output(
        read_events(recordings / "openrouter-reasoning-text-and-done-marker.sse")
    )
    reasoning, message = result.items
    assert reasoning.item["content"] == [
        {
            "type": "reasoning_text",
            "text": 'The user asks: "What is 2+2?" They expect a straightforward answer: '
            "4. Just answer 4.",
        }
    ]
    assert message.text == "4"
    assert result.done_marker


def test_resumed_stream_rebuilds_like_the_original(recordings):
    original = rebuild_output(read_events(recordings / "background-stream.sse"))
    resumed = rebuild_output(read_events(recordings / "background-resume-starting-after-0.sse"))
    assert [i.item for i in resumed.items] == [i.item for i in original.items]
    assert resumed.output_text == original.output_text == "2 + 2 equals 4."


def test_file_search_annotation_arrives_between_deltas(recordings):
    events = read_events(recordings / "file-search-with-citation.sse")
    live = [(t, p) for t, p in events if not t.endswith(DONE_TYPES)]
    message = rebuild_output(live).items[1]
    assert message.item["content"][0]["annotations"] == [
        {
            "type": "file_citation",
            "file_id": "file-9RhPAs9YqVajpGXRfcgavJ",
            "filename": "tmp8l5_2pzy.txt",
            "index": 30,
        }
    ]
    assert rebuild_output(live).items[0].status == "completed"  # from file_search_call.completed


def test_rebuilder_is_incremental(recordings):
    events = read_events(recordings / "reasoning-summary-then-text.sse")
    rebuilder = OutputRebuilder()
    texts = []
    for event_type, payload in events:
        rebuilder.feed(event_type, payload)
        if event_type == "response.output_text.delta":
            texts.append(rebuilder.result().output_text)
    assert texts == sorted(texts, key=len)  # only ever grows
    assert all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert rebuilder.result().output_text == texts[-1]
    reasoning = rebuilder.result().items[0]
    assert len(reasoning.item["summary"]) == 4


def test_unknown_types_are_counted_and_do_not_disturb(recordings):
    events = read_events(recordings / "text-with-logprobs.sse")
    odd = ("response.brand_new.delta", {"type": "response.brand_new.delta", "delta": "x"})
    mixed = [events[0], odd, *events[1:], odd]
    result = rebuild_output(mixed)
    assert result.unknown_types == [("response.brand_new.delta", 2)]
    assert result.output_text == "The capital of Minas Gerais is Belo Horizonte."


def _added(index, item):
    return (
        "response.output_item.added",
        {"type": "response.output_item.added", "output_index": index, "item": item},
    )


def _ev(event_type, **fields):
    return (event_type, {"type": event_type, **fields})


def test_done_value_wins_and_the_mismatch_is_noted():
    events = [
        _added(
            0,
            {
                "type": "message",
                "id": "msg_1",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        ),
        _ev(
            "response.content_part.added",
            item_id="msg_1",
            output_index=0,
            content_index=0,
            part={"type": "output_text", "text": "", "annotations": []},
        ),
        _ev(
            "response.output_text.delta",
            item_id="msg_1",
            output_index=0,
            content_index=0,
            delta="Hel",
        ),
        _ev(
            "response.output_text.done",
            item_id="msg_1",
            output_index=0,
            content_index=0,
            text="Hello",
        ),
    ]
    result = rebuild_output(events)
    assert result.output_text == "Hello"
    assert result.mismatches == [
        (
            "output[0].content[0].text: response.output_text.done differs from the streamed "
            "value (3 chars streamed, 5 in the full value; it wins)"
        )
    ]
    assert result.items[0].status == "in_progress" and not result.items[0].done


def test_events_before_their_item_get_a_placeholder():
    events = [
        _ev("response.function_call_arguments.delta", item_id="fc_1", output_index=2, delta='{"a"'),
        _ev("response.function_call_arguments.delta", item_id="fc_1", delta=":1}"),  # id only
    ]
    result = rebuild_output(events)
    (item,) = result.items
    assert (item.output_index, item.type, item.id) == (2, "function_call", "fc_1")
    assert item.item["arguments"] == '{"a":1}'
    assert result.mismatches == [
        "output[2]: response.function_call_arguments.delta before its output_item.added"
    ]


def test_refusal_and_custom_tool_input():
    events = [
        _added(
            0,
            {
                "type": "message",
                "id": "m",
                "status": "in_progress",
                "role": "assistant",
                "content": [],
            },
        ),
        _ev(
            "response.content_part.added",
            item_id="m",
            output_index=0,
            content_index=0,
            part={"type": "refusal", "refusal": ""},
        ),
        _ev("response.refusal.delta", item_id="m", output_index=0, content_index=0, delta="I can"),
        _ev("response.refusal.delta", item_id="m", output_index=0, content_index=0, delta="'t."),
        _added(
            1,
            {
                "type": "custom_tool_call",
                "id": "ct",
                "call_id": "c",
                "name": "grammar",
                "input": "",
            },
        ),
        _ev("response.custom_tool_call_input.delta", item_id="ct", output_index=1, delta="SELECT"),
        _ev("response.custom_tool_call_input.delta", item_id="ct", output_index=1, delta=" 1"),
    ]
    message, tool = rebuild_output(events).items
    assert message.item["content"] == [{"type": "refusal", "refusal": "I can't."}]
    assert message.text == ""
    assert tool.item["input"] == "SELECT 1" and tool.item["name"] == "grammar"


def test_hosted_tools():
    events = [
        _added(
            0,
            {
                "type": "code_interpreter_call",
                "id": "ci",
                "status": "in_progress",
                "code": "",
                "outputs": None,
                "container_id": "cntr",
            },
        ),
        _ev("response.code_interpreter_call.in_progress", item_id="ci", output_index=0),
        _ev(
            "response.code_interpreter_call_code.delta",
            item_id="ci",
            output_index=0,
            delta="print(",
        ),
        _ev("response.code_interpreter_call_code.delta", item_id="ci", output_index=0, delta="1)"),
        _ev("response.code_interpreter_call.interpreting", item_id="ci", output_index=0),
        _added(
            1,
            {"type": "image_generation_call", "id": "ig", "status": "in_progress", "result": None},
        ),
        _ev("response.image_generation_call.generating", item_id="ig", output_index=1),
        _ev(
            "response.image_generation_call.partial_image",
            item_id="ig",
            output_index=1,
            partial_image_index=0,
            partial_image_b64="AAA",
        ),
        _ev(
            "response.image_generation_call.partial_image",
            item_id="ig",
            output_index=1,
            partial_image_index=1,
            partial_image_b64="BBB",
        ),
        _added(
            2,
            {
                "type": "mcp_call",
                "id": "mc",
                "status": "in_progress",
                "name": "roll",
                "server_label": "dice",
                "arguments": "",
            },
        ),
        _ev("response.mcp_call_arguments.delta", item_id="mc", output_index=2, delta='{"d":'),
        _ev("response.mcp_call_arguments.delta", item_id="mc", output_index=2, delta="6}"),
        _ev("response.mcp_call.failed", item_id="mc", output_index=2),
        _added(
            3,
            {
                "type": "shell_call",
                "id": "sh",
                "call_id": "c",
                "status": "in_progress",
                "action": {"commands": [], "timeout_ms": None},
            },
        ),
        _ev("response.shell_call_command.added", output_index=3, command_index=0, command=""),
        _ev("response.shell_call_command.delta", output_index=3, command_index=0, delta="ls "),
        _ev("response.shell_call_command.delta", output_index=3, command_index=0, delta="-l"),
        _ev("response.shell_call_command.added", output_index=3, command_index=1, command="pwd"),
        _added(
            4,
            {
                "type": "shell_call_output",
                "id": "so",
                "call_id": "c",
                "status": "in_progress",
                "output": [],
            },
        ),
        _ev(
            "response.shell_call_output_content.delta",
            item_id="so",
            output_index=4,
            command_index=0,
            delta={"stdout": "a.txt\n"},
        ),
        _ev(
            "response.shell_call_output_content.delta",
            item_id="so",
            output_index=4,
            command_index=0,
            delta={"stderr": "warn"},
        ),
        _added(
            5,
            {
                "type": "apply_patch_call",
                "id": "ap",
                "call_id": "c",
                "status": "in_progress",
                "operation": {"type": "update_file", "path": "a.py", "diff": ""},
            },
        ),
        _ev(
            "response.apply_patch_call_operation_diff.delta",
            item_id="ap",
            output_index=5,
            delta="@@ -1 +1 @@\n",
        ),
        _ev(
            "response.apply_patch_call_operation_diff.delta",
            item_id="ap",
            output_index=5,
            delta="-a\n+b\n",
            obfuscation="xyz",
        ),
    ]
    result = rebuild_output(events)
    ci, image, mcp, shell, shell_out, patch = result.items
    assert ci.item["code"] == "print(1)" and ci.status == "interpreting"
    assert ci.item["container_id"] == "cntr"
    assert image.partial_images == {0: "AAA", 1: "BBB"} and image.status == "generating"
    assert mcp.item["arguments"] == '{"d":6}' and mcp.status == "failed"
    assert shell.item["action"] == {"commands": ["ls -l", "pwd"], "timeout_ms": None}
    assert shell_out.item["output"] == [{"stdout": "a.txt\n", "stderr": "warn"}]
    assert patch.item["operation"] == {
        "type": "update_file",
        "path": "a.py",
        "diff": "@@ -1 +1 @@\n-a\n+b\n",
    }
    assert result.unknown_types == []  # apply_patch is known although no SDK lists it
    assert result.to_json()["items"][1]["partial_images"] == {"0": "AAA", "1": "BBB"}

    finished = rebuild_output(
        events
        + [
            _ev(
                "response.shell_call_output_content.done",
                item_id="so",
                output_index=4,
                command_index=0,
                output=[
                    {
                        "stdout": "a.txt\n",
                        "stderr": "warn",
                        "outcome": {"type": "exit", "exit_code": 0},
                    }
                ],
            ),
            _ev(
                "response.code_interpreter_call_code.done",
                item_id="ci",
                output_index=0,
                code="print(2)",
            ),
        ]
    )
    assert finished.items[4].item["output"][0]["outcome"] == {"type": "exit", "exit_code": 0}
    assert finished.items[0].item["code"] == "print(2)"
    assert finished.mismatches == [
        (
            "output[0].code: response.code_interpreter_call_code.done differs from the streamed "
            "value (8 chars streamed, 8 in the full value; it wins)"
        )
    ]


def test_historical_event_names_rebuild():
    events = [
        _added(0, {"type": "reasoning", "id": "rs", "summary": []}),
        _ev(
            "response.reasoning_summary.delta",
            item_id="rs",
            output_index=0,
            summary_index=0,
            delta={"text": "Think"},
        ),
        _ev(
            "response.reasoning_summary.delta",
            item_id="rs",
            output_index=0,
            summary_index=0,
            delta="ing.",
        ),
        _added(
            1, {"type": "code_interpreter_call", "id": "ci", "status": "in_progress", "code": ""}
        ),
        _ev("response.code_interpreter_call.code.delta", item_id="ci", output_index=1, delta="1+1"),
        _added(2, {"type": "mcp_call", "id": "mc", "arguments": ""}),
        _ev("response.mcp_call.arguments_delta", item_id="mc", output_index=2, delta="{}"),
        _added(3, {"type": "message", "id": "m", "status": "in_progress", "content": []}),
        _ev("response.output_text.delta", item_id="m", output_index=3, content_index=0, delta="Hi"),
        _ev(
            "response.output_text_annotation.added",
            item_id="m",
            output_index=3,
            content_index=0,
            annotation_index=0,
            annotation={"type": "url_citation", "url": "https://x"},
        ),
    ]
    result = rebuild_output(events)
    assert result.items[0].item["summary"] == [{"type": "summary_text", "text": "Thinking."}]
    assert result.items[1].item["code"] == "1+1"
    assert result.items[2].item["arguments"] == "{}"
    assert result.items[3].item["content"][0]["annotations"] == [
        {"type": "url_citation", "url": "https://x"}
    ]
    assert result.output_text == "Hi"


def test_unknown_item_types_are_kept_generically():
    item = {"type": "program", "id": "pg_1", "status": "completed", "source": "x = 1"}
    result = rebuild_output(
        [
            _added(0, item),
            (
                "response.output_item.done",
                {"type": "response.output_item.done", "output_index": 0, "item": item},
            ),
        ]
    )
    assert result.items[0].item == item and result.items[0].type == "program"


def test_items_only_in_the_terminal_response_are_adopted():
    final_item = {
        "type": "message",
        "id": "m",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_text", "text": "late", "annotations": []}],
    }
    result = rebuild_output(
        [
            (
                "response.completed",
                {
                    "type": "response.completed",
                    "response": {
                        "id": "r",
                        "status": "completed",
                        "output": [final_item],
                        "usage": {"output_tokens": 1},
                    },
                },
            ),
        ]
    )
    assert result.items[0].item == final_item
    assert result.output_text == "late"
    assert result.mismatches == ["output[0]: not streamed; taken from the terminal response"]


def test_garbage_payloads_never_crash():
    events = [
        ("response.output_text.delta", {"output_index": "zero", "delta": 5}),
        ("response.output_text.delta", {"output_index": -1}),
        ("response.output_item.added", {"output_index": 0, "item": "nope"}),
        ("response.output_item.added", {"output_index": 0, "item": {"type": 3, "content": "x"}}),
        ("response.output_text.delta", {"output_index": 0, "content_index": 10**9, "delta": "a"}),
        (
            "response.output_text.annotation.added",
            {"output_index": 0, "annotation_index": 10**12, "annotation": None},
        ),
        ("response.content_part.done", {"output_index": 0, "part": None}),
        ("response.completed", {"response": "not an object"}),
        ("response.completed", {"response": {"output": [1, None, {"type": "message"}]}}),
        ("error", {"error": "plain string"}),
        ("error", {}),
        ("response.output_text.delta", ["not", "a", "dict"]),
        ("chat.completion.chunk", {"choices": [{"delta": None, "index": "x"}, 3]}),
    ]
    result = rebuild_output(events)
    assert result.status == "completed"
    assert result.error.message == "plain string"
    json.dumps(result.to_json(include_response=True))


def _chunk(choices, **extra):
    return (
        "chat.completion.chunk",
        {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "model": "gpt-4o-mini",
            "created": 1,
            "choices": choices,
            **extra,
        },
    )


def test_chat_completion_chunks():
    events = [
        _chunk(
            [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]
        ),
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {"content": "Hel"},
                    "finish_reason": None,
                    "logprobs": {"content": [{"token": "Hel", "logprob": -0.1}]},
                }
            ]
        ),
        _chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}]),
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_1",
                                "type": "function",
                                "function": {"name": "f", "arguments": ""},
                            }
                        ]
                    },
                    "finish_reason": None,
                }
            ]
        ),
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": '{"x"'}}]},
                    "finish_reason": None,
                }
            ]
        ),
        _chunk(
            [
                {
                    "index": 0,
                    "delta": {"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]},
                    "finish_reason": None,
                }
            ]
        ),
        _chunk([{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]),
        _chunk([], usage={"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}),
        ("streamscope.done", {"raw": "[DONE]"}),
    ]
    result = rebuild_output(events)
    assert result.format == "chat"
    assert result.status == "completed"
    assert result.output_text == "Hello"
    message, call = result.items
    assert message.item["content"][0]["logprobs"] == [{"token": "Hel", "logprob": -0.1}]
    assert (call.type, call.id, call.item["name"], call.item["arguments"]) == (
        "function_call",
        "call_1",
        "f",
        '{"x":1}',
    )
    assert [i.output_index for i in result.items] == [0, 1]
    assert result.usage == {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    assert (result.response_id, result.model, result.done_marker) == (
        "chatcmpl-1",
        "gpt-4o-mini",
        True,
    )


def test_chat_length_refusal_and_several_choices():
    events = [
        _chunk(
            [
                {"index": 1, "delta": {"content": "B"}, "finish_reason": None},
                {"index": 0, "delta": {"refusal": "No."}, "finish_reason": None},
            ]
        ),
        _chunk([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
    ]
    unfinished = rebuild_output(events)
    assert unfinished.status is None
    assert [i.choice_index for i in unfinished.items] == [0, 1]
    assert unfinished.items[0].item["content"] == [{"type": "refusal", "refusal": "No."}]
    finished = rebuild_output(
        events + [_chunk([{"index": 1, "delta": {}, "finish_reason": "length"}])]
    )
    assert finished.status == "incomplete"
    assert finished.items[1].status == "incomplete"
    assert finished.output_text == "B"


def test_chat_error_chunk():
    events = [
        _chunk([{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}]),
        ("error", {"error": {"message": "upstream died", "code": "502"}}),
    ]
    result = rebuild_output(events)
    assert result.format == "chat" and result.status is None
    assert result.error.message == "upstream died" and result.error.code == "502"
    assert result.output_text == "partial"
