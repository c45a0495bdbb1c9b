"""The browser's OutputModel (static/js/output_model.js, run under Node) rebuilds what streams/protocol/rebuild.py
rebuilds: the same output_text, item types in the same order, the same status and error, for
every shared recording, every simulator scenario (Responses and Chat Completions) and a few
hand-made edge cases (unknown types, malformed lines, events before their item)."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from simulator.chat import plan_chat
from simulator.scenarios import SCENARIOS, build_events
from streams.history.importer import parse_stream
from streams.protocol.catalogue import catalogue_json, event_type_for
from streams.protocol.rebuild import rebuild_output
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


def test_js_model_matches_the_python_rebuild_for_every_scenario_and_recording():
    runs = {**scenario_runs(), **recording_runs()}
    assert len(runs) > 20
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
