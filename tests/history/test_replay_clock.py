"""Replay position logic (streams/history/replay_clock.py) and its browser twin (static/js/replay_clock.js)."""

import json
import math
import shutil
import subprocess

import pytest

from streams.history.replay_clock import (
    MAX,
    UNTIMED_PACE_MS,
    BadReplayParameter,
    ReplayPosition,
    advance,
    format_position,
    is_untimed,
    next_of_type,
    parse_position,
    parse_speed,
    position_after_seq,
    position_at_time,
    replay_times,
    schedule,
    step,
)
from tests.support.servers import ROOT

TIMES = [5.0, 10.0, 10.0, 20.0, 40.0]
TYPES = ["response.created", "response.output_text.delta", "response.output_text.delta", "response.output_text.done",
         "response.completed"]


@pytest.mark.parametrize(("value", "speed"), [(None, 1.0), ("", 1.0), ("2", 2.0), ("0.25", 0.25), ("10", 10.0),
                                              ("max", MAX), ("MAX", MAX), ("2x", 2.0), (4, 4.0)])
def test_parse_speed_accepts_the_documented_range(value, speed):
    assert parse_speed(value) == speed


@pytest.mark.parametrize("value", ["0.1", "11", "fast", "nan", "inf", "-1", "  "])
def test_parse_speed_refuses_anything_else_with_a_reason(value):
    with pytest.raises(BadReplayParameter, match="speed must be"):
        parse_speed(value)


def test_replay_times_keep_arrival_times_but_never_go_back():
    assert replay_times([3.0, 2.0, 7.5, float("nan"), 9.0], untimed=False) == [3.0, 3.0, 7.5, 7.5, 9.0]


def test_untimed_runs_replay_in_order_at_a_fixed_pace():
    assert is_untimed([0.0, 0.0, 0.0])
    assert is_untimed([1.0, 2.0], timed=False)
    assert not is_untimed([0.0, 1.0]) and not is_untimed([0.0])
    assert replay_times([0.0, 0.0, 0.0]) == [0.0, UNTIMED_PACE_MS, 2 * UNTIMED_PACE_MS]
    # Chunk by chunk, the same times as all at once.
    assert replay_times([0.0, 0.0], untimed=True, start_index=3) == [3 * UNTIMED_PACE_MS, 4 * UNTIMED_PACE_MS]
    assert replay_times([1.0, 9.0], untimed=False, start_index=2, floor_ms=4.0) == [4.0, 9.0]


def test_positions_from_a_time_or_an_event():
    assert position_at_time(TIMES, 10.0) == ReplayPosition(3, 10.0)  # every event at or before 10 ms
    assert position_at_time(TIMES, 9.9) == ReplayPosition(1, 9.9)
    assert position_at_time(TIMES, -5) == ReplayPosition(0, 0.0)
    assert position_at_time(TIMES, 999) == ReplayPosition(5, 40.0)
    assert position_after_seq(TIMES, 1) == ReplayPosition(2, 10.0)  # seq 1 shown, its twin at 10 ms not yet
    assert position_after_seq(TIMES, -1) == ReplayPosition(0, 0.0)
    assert position_after_seq(TIMES, 99) == ReplayPosition(5, 40.0)


@pytest.mark.parametrize(("at", "position"), [
    (None, ReplayPosition(0, 0.0)), ("", ReplayPosition(0, 0.0)), ("15", ReplayPosition(3, 15.0)),
    ("15ms", ReplayPosition(3, 15.0)), ("12.5", ReplayPosition(3, 12.5)), ("seq1", ReplayPosition(2, 10.0)),
    ("#3", ReplayPosition(4, 20.0)), ("s0", ReplayPosition(1, 5.0)), ("end", ReplayPosition(5, 40.0)),
])
def test_parse_position(at, position):
    assert parse_position(at, TIMES) == position


@pytest.mark.parametrize("at", ["abc", "seq", "-5", "1e3", "5 s"])
def test_parse_position_refuses_garbage(at):
    with pytest.raises(BadReplayParameter, match="at must be"):
        parse_position(at, TIMES)


def test_a_formatted_position_opens_at_the_same_moment():
    for position in [ReplayPosition(0, 0.0), ReplayPosition(2, 10.0), ReplayPosition(3, 10.0), ReplayPosition(3, 15.25),
                     ReplayPosition(5, 40.0), ReplayPosition(1, 7.0)]:
        text = format_position(position, TIMES)
        assert parse_position(text, TIMES).index == position.index, text
    assert format_position(ReplayPosition(2, 10.0), TIMES) == "seq1"
    assert format_position(ReplayPosition(3, 15.25), TIMES) == "15.2ms"
    assert format_position(ReplayPosition(0, 0.0), TIMES) == "0ms"


def test_schedule_from_a_position_at_a_speed():
    assert schedule(TIMES, 1.0, ReplayPosition(0, 0.0)) == [(0, 5.0), (1, 10.0), (2, 10.0), (3, 20.0), (4, 40.0)]
    assert schedule(TIMES, 2.0, ReplayPosition(3, 15.0)) == [(3, 2.5), (4, 12.5)]
    assert schedule(TIMES, 0.25, ReplayPosition(4, 20.0)) == [(4, 80.0)]
    # An event already due (the clock is past it but it is not shown yet) goes at once.
    assert schedule(TIMES, 1.0, ReplayPosition(2, 10.0)) == [(2, 0.0), (3, 10.0), (4, 30.0)]
    assert schedule(TIMES, MAX, ReplayPosition(1, 5.0)) == [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0)]


def test_advance_step_and_jump():
    start = ReplayPosition(0, 0.0)
    assert advance(TIMES, start, 10.0, 1.0) == ReplayPosition(3, 10.0)
    assert advance(TIMES, start, 10.0, 0.5) == ReplayPosition(1, 5.0)
    assert advance(TIMES, ReplayPosition(2, 10.0), 0.0, 1.0) == ReplayPosition(3, 10.0)
    assert advance(TIMES, start, 1e9, 10.0) == ReplayPosition(5, 40.0)
    assert advance(TIMES, start, 0.0, MAX) == ReplayPosition(5, 40.0)
    assert step(TIMES, start, 1) == ReplayPosition(1, 5.0)
    assert step(TIMES, ReplayPosition(1, 5.0), 1) == ReplayPosition(2, 10.0)
    assert step(TIMES, ReplayPosition(2, 10.0), 1) == ReplayPosition(3, 10.0)  # same time, one event more
    assert step(TIMES, ReplayPosition(1, 5.0), -1) == ReplayPosition(0, 0.0)
    assert step(TIMES, start, -1) == start
    assert step(TIMES, ReplayPosition(5, 40.0), 1) == ReplayPosition(5, 40.0)
    assert next_of_type(TYPES, TIMES, start, "response.output_text.delta") == ReplayPosition(2, 10.0)
    assert next_of_type(TYPES, TIMES, ReplayPosition(2, 10.0), "response.output_text.delta") == ReplayPosition(3, 10.0)
    assert next_of_type(TYPES, TIMES, ReplayPosition(3, 10.0), "response.output_text.delta") is None


# --- the JavaScript twin gives the same answers ---------------------------------------------------
TWIN_SCRIPT = """
const src = require("fs").readFileSync(process.argv[1], "utf8");
import("data:text/javascript;base64," + Buffer.from(src).toString("base64")).then((m) => {
  const cases = JSON.parse(process.argv[2]);
  const out = cases.map(([fn, args]) => {
    try { return { value: m[fn](...args.map((a) => (a === "Infinity" ? Infinity : a))) }; }
    catch (err) { return { error: err.constructor.name }; }
  });
  console.log(JSON.stringify(out, (k, v) => (v === Infinity ? "Infinity" : v)));
});
"""


def _py(value):
    if isinstance(value, ReplayPosition):
        return {"index": value.index, "clockMs": value.clock_ms}
    if isinstance(value, list):
        return [_py(v) for v in value]
    if isinstance(value, tuple):
        return [_py(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return "Infinity"
    return value


def _pos(p):
    return ReplayPosition(p["index"], p["clockMs"])


CASES = [
    ("parseSpeed", ["2"]), ("parseSpeed", ["max"]), ("parseSpeed", ["11"]), ("parseSpeed", ["0.25"]),
    ("replayTimes", [[3.0, 2.0, 7.5, 9.0], False]), ("replayTimes", [[0, 0, 0], None]),
    ("positionAtTime", [TIMES, 10.0]), ("positionAtTime", [TIMES, 9.9]), ("positionAfterSeq", [TIMES, 1]),
    ("parsePosition", ["seq1", TIMES]), ("parsePosition", ["15ms", TIMES]), ("parsePosition", ["end", TIMES]),
    ("parsePosition", ["abc", TIMES]), ("formatPosition", [{"index": 3, "clockMs": 15.25}, TIMES]),
    ("formatPosition", [{"index": 2, "clockMs": 10.0}, TIMES]),
    ("schedule", [TIMES, 2.0, {"index": 3, "clockMs": 15.0}]),
    ("schedule", [TIMES, "Infinity", {"index": 3, "clockMs": 15.0}]),
    ("advance", [TIMES, {"index": 0, "clockMs": 0}, 10.0, 1.0]), ("step", [TIMES, {"index": 2, "clockMs": 10.0}, 1]),
    ("step", [TIMES, {"index": 1, "clockMs": 5.0}, -1]),
    ("nextOfType", [TYPES, TIMES, {"index": 0, "clockMs": 0}, "response.output_text.delta"]),
]
PY = {
    "parseSpeed": parse_speed, "replayTimes": lambda ts, u: replay_times(ts, u),
    "positionAtTime": position_at_time, "positionAfterSeq": position_after_seq, "parsePosition": parse_position,
    "formatPosition": lambda p, t: format_position(_pos(p), t),
    "schedule": lambda t, s, p: schedule(t, MAX if s == "Infinity" else s, _pos(p)),
    "advance": lambda t, p, w, s: advance(t, _pos(p), w, s), "step": lambda t, p, d: step(t, _pos(p), d),
    "nextOfType": lambda ty, t, p, name: next_of_type(ty, t, _pos(p), name),
}


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_browser_twin_agrees_with_python():
    module = ROOT / "static" / "js" / "replay_clock.js"
    result = subprocess.run(["node", "-e", TWIN_SCRIPT, str(module), json.dumps(CASES)], capture_output=True,
                            text=True, check=True, timeout=30)
    answers = json.loads(result.stdout)
    for (name, args), answer in zip(CASES, answers, strict=True):
        try:
            expected = {"value": _py(PY[name](*args))}
        except BadReplayParameter:
            expected = {"error": "BadReplayParameter"}
        assert answer == expected, (name, args)
