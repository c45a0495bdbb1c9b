// Replay position logic, pure: the browser's twin of streams/history/replay_clock.py (same rules,
// same names in camelCase; tests/test_replay.py runs both on the same inputs). A position is
// { index, clockMs }: events[0..index) are shown and the clock stands at clockMs on the run's axis.

export const MIN_SPEED = 0.25;
export const MAX_SPEED = 10;
export const MAX = Infinity;
export const UNTIMED_PACE_MS = 20;

const SEQ = /^(?:seq|s|#)(-?\d+)$/i;
const MS = /^(\d+(?:\.\d+)?)(?:ms)?$/i;

export class BadReplayParameter extends Error {}

export function parseSpeed(value, fallback = 1) {
  if (value === null || value === undefined || value === "") return fallback;
  let speed = value;
  if (typeof value === "string") {
    let text = value.trim().toLowerCase();
    if (text === "max") return MAX;
    text = text.replace(/x$/, "");
    speed = Number(text);
    if (text === "" || Number.isNaN(speed)) throw new BadReplayParameter(`speed must be a number from ${MIN_SPEED} to ${MAX_SPEED}, or max; got ${value}`);
  }
  if (!Number.isFinite(speed) || speed < MIN_SPEED || speed > MAX_SPEED) {
    throw new BadReplayParameter(`speed must be from ${MIN_SPEED} to ${MAX_SPEED} (or max); got ${value}`);
  }
  return speed;
}

export function isUntimed(ts, timed = true) {
  if (timed === false) return true;
  if (ts.length < 2) return false;
  let low = Infinity;
  let high = -Infinity;
  for (const t of ts) { if (t < low) low = t; if (t > high) high = t; }
  return low === high;
}

export function replayTimes(ts, untimed = null, startIndex = 0, floorMs = 0) {
  if (untimed === null) untimed = isUntimed(ts);
  const times = new Array(ts.length);
  if (untimed) {
    for (let i = 0; i < ts.length; i++) times[i] = (startIndex + i) * UNTIMED_PACE_MS;
    return times;
  }
  let previous = floorMs;
  for (let i = 0; i < ts.length; i++) {
    const t = ts[i];
    const value = typeof t === "number" && Number.isFinite(t) && t > 0 ? t : 0;
    previous = Math.max(previous, value);
    times[i] = previous;
  }
  return times;
}

export function endMs(times) {
  return times.length ? times[times.length - 1] : 0;
}

// First index whose time is > value (times are non-decreasing).
export function bisectRight(times, value) {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (times[mid] <= value) lo = mid + 1; else hi = mid;
  }
  return lo;
}

export function positionAtTime(times, ms) {
  const clock = Math.min(Math.max(0, ms), endMs(times));
  return { index: bisectRight(times, clock), clockMs: clock };
}

export function positionAfterSeq(times, seq) {
  const s = Math.min(Math.max(-1, seq), times.length - 1);
  return { index: s + 1, clockMs: s >= 0 ? times[s] : 0 };
}

export function parsePosition(value, times) {
  const text = (value || "").trim();
  if (!text) return { index: 0, clockMs: 0 };
  if (text.toLowerCase() === "end") return { index: times.length, clockMs: endMs(times) };
  let match = SEQ.exec(text);
  if (match) return positionAfterSeq(times, Number(match[1]));
  match = MS.exec(text);
  if (match) return positionAtTime(times, Number(match[1]));
  throw new BadReplayParameter(`at must be a time in ms (e.g. 1500) or an event (e.g. seq42); got ${value}`);
}

export function formatPosition(position, times) {
  const { index, clockMs } = position;
  if (index === 0 && clockMs <= 0) return "0ms";
  if (index > 0 && clockMs === times[index - 1]) return `seq${index - 1}`;
  return `${Math.floor(clockMs * 10) / 10}ms`;
}

export function schedule(times, speed, position) {
  const out = [];
  for (let i = position.index; i < times.length; i++) {
    out.push([i, speed === MAX ? 0 : Math.max(0, (times[i] - position.clockMs) / speed)]);
  }
  return out;
}

export function advance(times, position, wallMs, speed) {
  if (speed === MAX) return { index: times.length, clockMs: endMs(times) };
  const clock = Math.min(position.clockMs + Math.max(0, wallMs) * speed, endMs(times));
  return { index: Math.max(position.index, bisectRight(times, clock)), clockMs: Math.max(clock, position.clockMs) };
}

export function step(times, position, delta) {
  const index = Math.min(Math.max(0, position.index + delta), times.length);
  return { index, clockMs: index ? times[index - 1] : 0 };
}

export function nextOfType(types, times, position, type) {
  for (let i = position.index; i < types.length; i++) {
    if (types[i] === type) return { index: i + 1, clockMs: times[i] };
  }
  return null;
}
