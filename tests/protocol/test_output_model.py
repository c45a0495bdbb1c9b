"""The browser's OutputModel (static/js/output_model.js, run under Node) rebuilds what streams/protocol/rebuild.py
rebuilds: the same output_text, item types in the same order, the same status and error, for
every shared recording, every simulator scenario (Responses and Chat Completions, streamed and as
the one ``streamscope.response_body`` event of a non-streamed answer) and a few hand-made edge
cases (unknown types, malformed lines, events before their item, queued and not-JSON bodies)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from simulator.chat import completion_from_chunks, plan_chat
from simulator.scenarios import SCENARIOS, build_events
from streams.history.importer import parse_stream
from streams.protocol.catalogue import catalogue_json, event_type_for
from streams.protocol.rebuild import RESPONSE_BODY, TERMINAL_STATUS, rebuild_output
from tests.support.servers import RECORDINGS, ROOT

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed; the JS model needs it")


def records(pairs):
    return [{"seq": i, "t": 0.0, "type": t, "data": d} for i, (t, d) in enumerate(pairs)]


def run_js(runs: dict[str, list[dict]]) -> dict:
    payload = json.dumps({"catalogue": catalogue_json(), "runs": runs})
    result = subprocess.run(
        [NODE, str(ROOT / "tests" / "js" / "feed_output.mjs")],
        input=payload, capture_output=True, text=True, cwd=ROOT, timeout=120, check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def scenario_runs() -> dict[str, list[tuple[str, dict]]]:
    runs = {}
    for scenario in SCENARIOS:
        if scenario.http_status is not None:
            continue
        events = build_events(scenario.id, {"input": "Tell me about <b>streams</b>"}, seed="7")
        runs[f"responses:{scenario.id}"] = [(event["type"], event) for event in events]
        if scenario.chat:
            body = {
                "model": scenario.id,
                "messages": [{"role": "user", "content": "hi"}],
                "stream": True,
                "stream_options": {"include_usage": True},
                "metadata": {"sim_seed": "7"},
            }
            chunks = [step.event for step in plan_chat(body).steps]
            runs[f"chat:{scenario.id}"] = [(event_type_for(c), c) for c in chunks]
    return runs


def recording_runs() -> dict[str, list[tuple[str, object]]]:
    runs = {}
    for path in sorted(RECORDINGS.iterdir()):
        if path.suffix in (".sse", ".json"):
            parsed = parse_stream(path.read_bytes())
            runs[f"recording:{path.name}"] = [(e.type, e.payload) for e in parsed.events]
    return runs


def body_runs() -> dict[str, list[tuple[str, object]]]:
    """Each scenario's answer as the gateway records it when not streamed: one RESPONSE_BODY event
    holding the Response (the stream's terminal one) or the chat.completion (the simulator's own
    fold of its chunks, what it answers without ``stream``)."""
    runs = {}
    for name, pairs in scenario_runs().items():
        if name.startswith("chat:"):
            chunks = [chunk for _, chunk in pairs]
            if "error" not in chunks[-1]:  # else the simulator answers an HTTP error, not a body
                runs[f"body:{name}"] = [(RESPONSE_BODY, completion_from_chunks(chunks))]
            continue
        terminal = [payload for event_type, payload in pairs if event_type in TERMINAL_STATUS]
        if terminal:
            runs[f"body:{name}"] = [(RESPONSE_BODY, terminal[-1]["response"])]
    return runs


def test_js_model_matches_the_python_rebuild_for_every_scenario_and_recording():
    runs = {**scenario_runs(), **recording_runs(), **body_runs()}
    assert len(runs) > 40
    js = run_js({name: records(pairs) for name, pairs in runs.items()})
    for name, pairs in runs.items():
        expected = rebuild_output(pairs)
        got = js[name]
        assert got["output_text"] == expected.output_text, name
        real_items = [i for i in got["items"] if i["type"] not in ("outcome", "audio", "malformed")]
        assert [item["type"] for item in real_items] == [item.type for item in expected.items], name
        if expected.format == "responses":
            indexes = [item.output_index for item in expected.items]
            assert [item["index"] for item in real_items] == indexes, name
        assert got["status"] == expected.status, name
        if expected.error is not None:
            assert got["errors"], name
            assert got["errors"][0]["message"] == expected.error.message, name
        assert got["unknown"] == dict(expected.unknown_types), name
        calls = [(i["name"], i["arguments"]) for i in real_items if i["type"] == "function_call"]
        assert calls == [(i.item.get("name"), i.item.get("arguments"))
                         for i in expected.items if i.type == "function_call"], name


def shown(items) -> list[tuple[str, str]]:
    """What a page shows of the items: (type, message text), an empty chat message left out (a stream
    with tool calls opens one, with content "", that the same answer whole does not have: null)."""
    return [(kind, text) for kind, text in items if not (kind == "message" and text == "")]


# The stream shows text its failed terminal Response drops (the failure came mid-message): the body
# holds only the Response, so it shows only that.
STREAM_SHOWS_MORE = {"responses:sim-failed"}


def test_a_non_streamed_answer_rebuilds_as_the_stream_of_the_same_answer():
    streams, bodies = scenario_runs(), body_runs()
    js = run_js({name: records(pairs) for name, pairs in bodies.items()})
    assert len(bodies) > 25
    for name, body in bodies.items():
        stream_name = name.removeprefix("body:")
        if stream_name in STREAM_SHOWS_MORE:
            continue
        streamed, rebuilt, got = rebuild_output(streams[stream_name]), rebuild_output(body), js[name]
        want = shown((i.type, i.text if i.type == "message" else "") for i in streamed.items)
        assert shown((i.type, i.text if i.type == "message" else "") for i in rebuilt.items) == want, name
        real_items = [i for i in got["items"] if i["type"] not in ("outcome", "audio", "malformed")]
        assert shown((i["type"], i["text"] if i["type"] == "message" else "") for i in real_items) == want, name
        assert rebuilt.output_text == got["output_text"] == streamed.output_text, name
        assert rebuilt.status == got["status"] == streamed.status, name
        assert rebuilt.usage == got["usage"] == streamed.usage, name
        assert rebuilt.format == streamed.format and rebuilt.model == streamed.model, name
        assert (rebuilt.error and rebuilt.error.message) == (streamed.error and streamed.error.message), name
        if streamed.error is not None:
            assert got["errors"][0]["message"] == streamed.error.message, name
        assert not rebuilt.mismatches, name


def ev(event_type: str, **fields) -> tuple[str, dict]:
    return event_type, {"type": event_type, **fields}


def text_delta(delta: str) -> tuple[str, dict]:
    return ev("response.output_text.delta", output_index=1, item_id="m", content_index=0,
              delta=delta)


def test_edge_cases_unknown_types_malformed_lines_and_events_before_their_item():
    reasoning = {"type": "reasoning", "id": "rs", "summary": []}
    message = {"type": "message", "id": "m", "role": "assistant",
               "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}
    call = {"type": "function_call", "id": "fc", "name": "f", "arguments": "{}", "call_id": "c"}
    malformed = {"raw": "data: {not json", "error": "Expecting property name", "where": "data"}
    events = [
        ev("response.created", response={"id": "r", "output": []}),
        text_delta("Hel"),  # before its item was ever added (and before its content part)
        ev("response.brand_new_thing", output_index=0),
        ("streamscope.malformed", malformed),
        ev("response.output_item.added", output_index=0, item=reasoning),
        text_delta("lo"),
        ev("response.output_item.done", output_index=0, item=reasoning),
        ev("response.completed", response={"id": "r", "status": "completed",
                                           "output": [reasoning, message, call]}),
    ]
    got = run_js({"edge": records(events)})["edge"]
    expected = rebuild_output(events)
    assert got["output_text"] == expected.output_text == "Hello"
    kinds = [i["type"] for i in got["items"]]
    assert kinds == ["malformed", "reasoning", "message", "function_call", "outcome"]
    assert got["unknown"] == {"response.brand_new_thing": 1}
    assert got["malformed"] == 1
    assert got["status"] == "completed"


def test_flat_and_nested_error_events_and_a_failed_response():
    failed = ev("response.failed", response={"status": "failed", "output": [],
                                             "error": {"code": "server_error", "message": "boom"}})
    nested = [ev("error", error={"type": "insufficient_quota", "code": "insufficient_quota",
                                 "message": "quota"}), failed]
    flat = [ev("error", code="server_error", message="flat message", param=None)]
    got = run_js({"nested": records(nested), "flat": records(flat), "failed": records([failed])})
    assert got["nested"]["errors"] == [
        {"message": "quota", "code": "insufficient_quota", "param": None, "source": "error"}
    ]
    assert got["nested"]["status"] == "failed"
    assert got["flat"]["errors"][0]["message"] == "flat message"
    assert got["flat"]["errors"][0]["code"] == "server_error"
    assert got["failed"]["errors"][0]["message"] == "boom"
    assert got["failed"]["status"] == "failed"


def test_hand_made_bodies_a_whole_response_a_chat_completion_a_queued_response_and_not_json():
    response = {
        "id": "resp_1", "object": "response", "status": "completed", "model": "m",
        "output": [
            {"type": "reasoning", "id": "rs", "summary": [{"type": "summary_text", "text": "Thinking."}]},
            {"type": "message", "id": "m", "role": "assistant", "status": "completed",
             "content": [{"type": "output_text", "text": "Hi ", "annotations": []},
                         {"type": "refusal", "refusal": "not that"},
                         {"type": "output_text", "text": "there", "annotations": []}]},
            {"type": "function_call", "id": "fc", "call_id": "c", "name": "lookup", "arguments": '{"q": 1}',
             "status": "completed"},
        ],
        "usage": {"input_tokens": 3, "output_tokens": 5, "total_tokens": 8},
    }
    chat = {
        "id": "chatcmpl-1", "object": "chat.completion", "model": "m",
        "choices": [{"index": 0, "finish_reason": "length", "logprobs": None,
                     "message": {"role": "assistant", "content": "Cut sho", "refusal": None,
                                 "tool_calls": [{"id": "call_1", "type": "function",
                                                 "function": {"name": "f", "arguments": "{}"}}]}}],
        "usage": {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6},
    }
    queued = {"id": "resp_q", "object": "response", "status": "queued", "background": True, "output": [],
              "usage": None}
    not_json = {"raw": "<html>502</html>", "error": "not a JSON object"}
    runs = {"response": [(RESPONSE_BODY, response)], "chat": [(RESPONSE_BODY, chat)],
            "queued": [(RESPONSE_BODY, queued)], "not_json": [(RESPONSE_BODY, not_json)]}
    got = run_js({name: records(pairs) for name, pairs in runs.items()})
    rebuilt = {name: rebuild_output(pairs) for name, pairs in runs.items()}

    assert rebuilt["response"].output_text == got["response"]["output_text"] == "Hi there"
    assert [i.type for i in rebuilt["response"].items] == ["reasoning", "message", "function_call"]
    assert [(i["type"], i["name"], i["arguments"]) for i in got["response"]["items"]] == [
        ("reasoning", None, None), ("message", None, None), ("function_call", "lookup", '{"q": 1}'),
        ("outcome", None, None)]
    assert rebuilt["response"].items[0].text == "Thinking."
    assert rebuilt["response"].status == got["response"]["status"] == "completed"
    assert rebuilt["response"].usage == got["response"]["usage"] == response["usage"]
    assert rebuilt["response"].response_id == "resp_1" and not rebuilt["response"].mismatches

    assert rebuilt["chat"].format == "chat" and rebuilt["chat"].output_text == got["chat"]["output_text"] == "Cut sho"
    assert rebuilt["chat"].status == got["chat"]["status"] == "incomplete"
    assert [(i["type"], i["name"], i["arguments"]) for i in got["chat"]["items"]] == [
        ("message", None, None), ("function_call", "f", "{}"), ("outcome", None, None)]
    assert [(i.type, i.item.get("name")) for i in rebuilt["chat"].items] == [("message", None), ("function_call", "f")]
    assert rebuilt["chat"].usage == got["chat"]["usage"] == chat["usage"]

    # A background request's answer is the Response as queued: no output, no end, but its outcome shows it.
    assert rebuilt["queued"].status is got["queued"]["status"] is None
    assert rebuilt["queued"].items == [] and rebuilt["queued"].response_id == "resp_q"
    assert got["queued"]["outcome"] == {"response_status": "queued"}

    # What was not JSON is kept as {"raw", "error"}: the page shows it as a malformed line.
    assert got["not_json"]["malformed"] == 1 and rebuilt["not_json"].items == []
    assert rebuilt["not_json"].mismatches == [f"{RESPONSE_BODY}: neither a Response nor a chat.completion; not rebuilt"]
