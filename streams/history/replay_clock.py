"""Replay position logic: where a replay of a stored run stands, and when each event is due again.

Pure functions over the events' arrival times. The browser's twin is ``static/js/replay_clock.js``
(same names in camelCase, same rules; a test runs both on the same inputs). The replay page, the
compare page's synchronised replay and the replay upstream (``/replay/<id>/v1/responses``) all
follow these rules:

- A position is ``(index, clock_ms)``: ``events[:index]`` have been shown and the replay clock
  stands at ``clock_ms`` on the run's own time axis (ms since its request was sent).
- At speed ``s`` the event at ``i >= index`` is due ``(time[i] - clock_ms) / s`` ms of wall time
  from now (never negative); ``max`` means every event is due at once.
- Runs without timings (imported SSE files: every ``t`` is 0 and ``metrics.timed`` is false) are
  replayed in order at a fixed pace of :data:`UNTIMED_PACE_MS` per event.
- In a URL a position is ``at=<ms>`` (or ``<ms>ms``), or ``at=seq<N>`` for "just after event N".
"""

from __future__ import annotations

import math
import re
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import dataclass

MIN_SPEED = 0.25
MAX_SPEED = 10.0
MAX = math.inf  # the speed "max": as fast as the reader takes it
UNTIMED_PACE_MS = 20.0

_SEQ = re.compile(r"^(?:seq|s|#)(-?\d+)$", re.IGNORECASE)
_MS = re.compile(r"^(\d+(?:\.\d+)?)(?:ms)?$", re.IGNORECASE)


class BadReplayParameter(ValueError):
    """A speed or position the person (or client) asked for cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class ReplayPosition:
    index: int  # how many events have been shown
    clock_ms: float  # where the replay clock stands on the run's time axis


def parse_speed(value: str | float | None, default: float = 1.0) -> float:
    """``0.25``..``10`` (a factor of the original pace) or ``max``; ``None``/"" gives ``default``."""
    if value is None or value == "":
        return default
    if isinstance(value, str):
        text = value.strip().lower()
        if text == "max":
            return MAX
        text = text.removesuffix("x")
        try:
            speed = float(text)
        except ValueError:
            raise BadReplayParameter(
                f"speed must be a number from {MIN_SPEED} to {MAX_SPEED:g}, or max; got {value!r}"
            ) from None
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        speed = float(value)
    else:
        raise BadReplayParameter(f"speed must be a number from {MIN_SPEED} to {MAX_SPEED:g}, or max; got {value!r}")
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise BadReplayParameter(f"speed must be from {MIN_SPEED} to {MAX_SPEED:g} (or max); got {value!r}")
    return speed


def is_untimed(ts: Sequence[float], timed: bool | None = True) -> bool:
    """True when the times carry no rhythm: the run says so, or every event has the same time."""
    if timed is False:
        return True
    return len(ts) > 1 and min(ts) == max(ts)


def replay_times(ts: Sequence[float], untimed: bool | None = None, start_index: int = 0,
                 floor_ms: float = 0.0) -> list[float]:
    """The time each event is replayed at: its arrival time, never earlier than the one before.

    Untimed runs (``untimed``; worked out with :func:`is_untimed` when None) get
    ``index * UNTIMED_PACE_MS``. ``start_index``/``floor_ms`` let a caller compute a long run's
    times chunk by chunk (``floor_ms`` = the previous chunk's last time).
    """
    if untimed is None:
        untimed = is_untimed(ts)
    if untimed:
        return [(start_index + i) * UNTIMED_PACE_MS for i in range(len(ts))]
    times = []
    previous = floor_ms
    for t in ts:
        value = t if isinstance(t, (int, float)) and math.isfinite(t) and t > 0 else 0.0
        previous = max(previous, value)
        times.append(previous)
    return times


def end_ms(times: Sequence[float]) -> float:
    return times[-1] if times else 0.0


def position_at_time(times: Sequence[float], ms: float) -> ReplayPosition:
    """Every event at or before ``ms`` shown; the clock at ``ms`` (clamped to the run)."""
    clock = min(max(0.0, ms), end_ms(times))
    return ReplayPosition(bisect_right(times, clock), clock)


def position_after_seq(times: Sequence[float], seq: int) -> ReplayPosition:
    """Events up to and including ``seq`` shown (seqs are dense from 0, so seq N is index N)."""
    seq = min(max(-1, seq), len(times) - 1)
    return ReplayPosition(seq + 1, times[seq] if seq >= 0 else 0.0)


def parse_position(value: str | None, times: Sequence[float]) -> ReplayPosition:
    """``at=`` of a replay URL: empty (the start), ``end``, ``<ms>``/``<ms>ms``, ``seq<N>``/``#N``."""
    text = (value or "").strip()
    if not text:
        return ReplayPosition(0, 0.0)
    if text.lower() == "end":
        return ReplayPosition(len(times), end_ms(times))
    match = _SEQ.match(text)
    if match:
        return position_after_seq(times, int(match.group(1)))
    match = _MS.match(text)
    if match:
        return position_at_time(times, float(match.group(1)))
    raise BadReplayParameter(f"at must be a time in ms (e.g. 1500) or an event (e.g. seq42); got {value!r}")


def format_position(position: ReplayPosition, times: Sequence[float]) -> str:
    """The ``at=`` value that opens at ``position``: ``seq<N>`` on an event, else ``<ms>ms``."""
    index = position.index
    if index == 0 and position.clock_ms <= 0:
        return "0ms"
    if index > 0 and position.clock_ms == times[index - 1]:
        return f"seq{index - 1}"
    tenths = f"{math.floor(position.clock_ms * 10) / 10:.1f}"
    return f"{tenths.removesuffix('.0')}ms"


def schedule(times: Sequence[float], speed: float, position: ReplayPosition) -> list[tuple[int, float]]:
    """``(index, due)`` for every event not shown yet: due in wall-clock ms from now."""
    if speed == MAX:
        return [(i, 0.0) for i in range(position.index, len(times))]
    return [(i, max(0.0, (times[i] - position.clock_ms) / speed)) for i in range(position.index, len(times))]


def advance(times: Sequence[float], position: ReplayPosition, wall_ms: float, speed: float) -> ReplayPosition:
    """Where a playing replay stands ``wall_ms`` of real time later (it never goes back)."""
    if speed == MAX:
        return ReplayPosition(len(times), end_ms(times))
    clock = min(position.clock_ms + max(0.0, wall_ms) * speed, end_ms(times))
    return ReplayPosition(max(position.index, bisect_right(times, clock)), max(clock, position.clock_ms))


def step(times: Sequence[float], position: ReplayPosition, delta: int) -> ReplayPosition:
    """One event forward (``delta=1``) or back (``-1``): the clock lands on the last shown event."""
    index = min(max(0, position.index + delta), len(times))
    return ReplayPosition(index, times[index - 1] if index else 0.0)


def next_of_type(types: Sequence[str], times: Sequence[float], position: ReplayPosition,
                 event_type: str) -> ReplayPosition | None:
    """Just after the next not-yet-shown event of ``event_type`` (None when there is none)."""
    for i in range(position.index, len(types)):
        if types[i] == event_type:
            return ReplayPosition(i + 1, times[i])
    return None
