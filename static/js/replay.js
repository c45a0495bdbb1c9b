// Replaying stored runs through the same RunView (and timeline) that shows live runs.
// ReplayPlayer drives one or more tracks on one shared clock (compare replays several runs in
// step); ReplayControls binds the play/step/speed/scrub bar to a player. Position rules live in
// replay_clock.js (the twin of streams/history/replay_clock.py).

import {
  MAX, UNTIMED_PACE_MS, bisectRight, endMs, formatPosition, isUntimed, nextOfType, parseSpeed,
  positionAfterSeq, positionAtTime, replayTimes, step,
} from "./replay_clock.js";

const MAX_PER_FRAME = 4000;

// A track: one run's events replayed into one RunView. offset shifts it on the shared axis
// (compare aligned at first token: offset = that run's time to first token).
export class ReplayTrack {
  constructor({ run, events, view, offset = 0 }) {
    this.run = run;
    this.events = events;
    this.view = view;
    this.offset = offset;
    this.untimed = isUntimed(events.map((e) => e.t), !(run.metrics && run.metrics.timed === false));
    this.times = replayTimes(events.map((e) => e.t), this.untimed);
    this.types = events.map((e) => e.type);
    // The view may already show the run (compare follows it live first): start from nothing.
    view.reset();
    this.applied = 0;
    this.position = { index: 0, clockMs: 0 };
    if (view.timeline) {
      view.timeline.setGhost(events);
      view.timeline.setUntimed(this.untimed);
    }
  }

  get done() { return this.position.index >= this.events.length; }

  // Show exactly events[0..position.index): forward by appending, backward by rebuilding.
  // cursorMs: where the shared clock stands on this run's own axis (may lie before 0 or after
  // the end when runs are aligned differently); the position's clock by default.
  moveTo(position, sync = false, cursorMs = position.clockMs) {
    const target = Math.min(Math.max(0, position.index), this.events.length);
    const view = this.view;
    if (target < this.applied) {
      view.reset();
      this.applied = 0;
    }
    if (target > this.applied) {
      view.addEvents(this.events.slice(this.applied, target));
      this.applied = target;
    }
    this.position = { index: target, clockMs: position.clockMs };
    const n = this.events.length;
    const status = target >= n ? this.run.status : target === 0 ? "queued" : "streaming";
    if (view.status !== status) {
      if (target >= n) view.setStatus(status, this.run.metrics || {}, this.run.error);
      else view.setStatus(status);
    }
    if (sync) view.flush();
    if (view.timeline) view.timeline.setCursor(this.untimed ? cursorMs / UNTIMED_PACE_MS : cursorMs, target);
  }
}

export class ReplayPlayer {
  constructor(tracks, { speed = 1, onChange = () => {} } = {}) {
    this.tracks = tracks;
    this.speed = speed;
    this.onChange = onChange;
    this.playing = false;
    this.frame = 0;
    this.clock = this.low();
  }

  // The shared axis runs from the earliest start to the latest end of any track.
  low() { return Math.min(0, ...this.tracks.map((t) => -t.offset)); }
  high() { return Math.max(0, ...this.tracks.map((t) => endMs(t.times) - t.offset)); }
  get done() { return this.tracks.every((t) => t.done); }

  setSpeed(speed) {
    this.speed = speed;
    this.lastWall = performance.now();
    this.onChange(this);
  }

  seekClock(clock, sync = true) {
    this.clock = Math.min(Math.max(clock, this.low()), this.high());
    for (const track of this.tracks) track.moveTo(positionAtTime(track.times, this.clock + track.offset), sync, this.clock + track.offset);
    this.onChange(this);
  }

  seekTrack(trackIndex, position) {
    const track = this.tracks[trackIndex];
    this.clock = position.clockMs - track.offset;
    this.tracks.forEach((other, i) => {
      const at = this.clock + other.offset;
      other.moveTo(i === trackIndex ? position : positionAtTime(other.times, at), true, at);
    });
    this.onChange(this);
  }

  seekSeq(trackIndex, seq) { this.seekTrack(trackIndex, positionAfterSeq(this.tracks[trackIndex].times, seq)); }

  // One event forward or back, on whichever track has the nearest event in that direction.
  step(delta) {
    this.pause();
    let best = -1;
    let bestAt = delta > 0 ? Infinity : -Infinity;
    this.tracks.forEach((track, i) => {
      const { index } = track.position;
      if (delta > 0 && index < track.times.length && track.times[index] - track.offset < bestAt) {
        best = i; bestAt = track.times[index] - track.offset;
      }
      if (delta < 0 && index > 0 && track.times[index - 1] - track.offset > bestAt) {
        best = i; bestAt = track.times[index - 1] - track.offset;
      }
    });
    if (best < 0) return;
    const track = this.tracks[best];
    const position = step(track.times, track.position, delta);
    this.clock = position.index ? position.clockMs - track.offset : this.low();
    this.tracks.forEach((other, i) => {
      if (i === best) { other.moveTo(position, true, this.clock + other.offset); return; }
      const at = positionAtTime(other.times, this.clock + other.offset);
      // Stepping moves one event: the other tracks never jump past where they were.
      const index = delta > 0 ? other.position.index : Math.min(at.index, other.position.index);
      other.moveTo({ index, clockMs: at.clockMs }, true, this.clock + other.offset);
    });
    this.onChange(this);
  }

  jumpToNext(type) {
    this.pause();
    let best = null;
    this.tracks.forEach((track, i) => {
      const position = nextOfType(track.types, track.times, track.position, type);
      if (position && (!best || position.clockMs - track.offset < best.at)) best = { i, position, at: position.clockMs - track.offset };
    });
    if (!best) return false;
    this.seekTrack(best.i, best.position);
    return true;
  }

  play() {
    if (this.playing) return;
    if (this.done) this.seekClock(this.low());
    this.playing = true;
    this.lastWall = performance.now();
    this.frame = requestAnimationFrame(() => this.tick());
    this.onChange(this);
  }

  pause() {
    if (!this.playing) return;
    this.playing = false;
    cancelAnimationFrame(this.frame);
    this.frame = 0;
    this.onChange(this);
  }

  toggle() { if (this.playing) this.pause(); else this.play(); }

  tick() {
    if (!this.playing) return;
    const now = performance.now();
    const wall = now - this.lastWall;
    this.lastWall = now;
    if (this.speed === MAX) {
      // As fast as the page takes it: a bounded slice per frame keeps it responsive.
      let clock = this.clock;
      for (const track of this.tracks) {
        const index = Math.min(track.events.length, track.position.index + MAX_PER_FRAME);
        const clockMs = index ? track.times[index - 1] : 0;
        track.moveTo({ index, clockMs });
        clock = Math.max(clock, clockMs - track.offset);
      }
      this.clock = clock;
    } else {
      this.clock = Math.min(this.clock + wall * this.speed, this.high());
      for (const track of this.tracks) {
        const at = this.clock + track.offset;
        const index = Math.max(track.position.index, bisectRight(track.times, at));
        track.moveTo({ index, clockMs: Math.max(track.position.clockMs, Math.min(Math.max(at, 0), endMs(track.times))) }, false, at);
      }
    }
    if (this.done) {
      this.clock = this.high();
      this.pause();
      return;
    }
    this.onChange(this);
    this.frame = requestAnimationFrame(() => this.tick());
  }

  // The at= value for a link to this moment.
  positionParam() {
    if (this.tracks.length === 1) {
      const track = this.tracks[0];
      return formatPosition(track.position, track.times);
    }
    return `${Math.floor(this.clock * 10) / 10}ms`;
  }
}

// Update the query string in place (history.replaceState), keeping commas readable.
export function replaceQuery(updates) {
  const url = new URL(location.href);
  for (const [key, value] of Object.entries(updates)) {
    if (value === null || value === undefined) url.searchParams.delete(key); else url.searchParams.set(key, value);
  }
  url.search = url.searchParams.toString().replace(/%2C/gi, ",");
  history.replaceState(null, "", url);
}

export function speedLabel(speed) {
  return speed === MAX ? "max" : `${speed}×`;
}

// The bar of buttons under a replay: play/pause, step, speed, jump to next type, scrub, link.
export class ReplayControls {
  constructor(bar, player, { typeCounts = new Map(), format = (p) => "" } = {}) {
    this.bar = bar;
    this.player = player;
    this.format = format;
    this.playButton = bar.querySelector("[data-play]");
    this.speedSelect = bar.querySelector("[data-speed]");
    this.jumpSelect = bar.querySelector("[data-jump-type]");
    this.jumpButton = bar.querySelector("[data-jump]");
    this.scrub = bar.querySelector("[data-scrub]");
    this.positionEl = bar.querySelector("[data-position]");
    this.urlTimer = 0;
    const options = [...typeCounts.entries()].map(([type, count]) => new Option(`${type} (${count})`, type));
    this.jumpSelect.replaceChildren(...options);
    const firstDelta = [...typeCounts.keys()].find((t) => t.endsWith(".delta"));
    if (firstDelta) this.jumpSelect.value = firstDelta;
    this.playButton.addEventListener("click", () => player.toggle());
    for (const button of bar.querySelectorAll("[data-step]")) {
      button.addEventListener("click", () => player.step(Number(button.dataset.step)));
    }
    this.speedSelect.addEventListener("change", () => player.setSpeed(parseSpeed(this.speedSelect.value)));
    this.jumpButton.addEventListener("click", () => {
      if (!player.jumpToNext(this.jumpSelect.value)) this.flash(`No later ${this.jumpSelect.value}`);
    });
    this.scrub.addEventListener("input", () => {
      const fraction = Number(this.scrub.value) / Number(this.scrub.max);
      player.pause();
      player.seekClock(player.low() + fraction * (player.high() - player.low()));
    });
    const copy = bar.querySelector("[data-copy-link]");
    if (copy) copy.addEventListener("click", () => this.copyLink(copy));
    document.addEventListener("keydown", (e) => {
      if (e.target.closest && e.target.closest("input, select, textarea, [contenteditable]")) return;
      if (e.target.closest && e.target.closest("[data-event-list], canvas") && e.key.startsWith("Arrow")) return;
      if (e.key === " " || e.key === "k") { player.toggle(); e.preventDefault(); }
      else if (e.key === "ArrowRight" || e.key === ".") { player.step(1); e.preventDefault(); }
      else if (e.key === "ArrowLeft" || e.key === ",") { player.step(-1); e.preventDefault(); }
      else if (e.key === "Home") { player.pause(); player.seekClock(player.low()); e.preventDefault(); }
      else if (e.key === "End") { player.pause(); player.seekClock(player.high()); e.preventDefault(); }
    });
  }

  update() {
    const player = this.player;
    this.playButton.textContent = player.playing ? "❚❚ Pause" : player.done ? "↺ Replay" : "▶ Play";
    this.playButton.setAttribute("aria-pressed", String(player.playing));
    const speed = player.speed === MAX ? "max" : String(player.speed);
    if (this.speedSelect.value !== speed) {
      if (![...this.speedSelect.options].some((o) => o.value === speed)) this.speedSelect.append(new Option(`${speed}×`, speed));
      this.speedSelect.value = speed;
    }
    const span = player.high() - player.low();
    const fraction = span > 0 ? (player.clock - player.low()) / span : 1;
    if (document.activeElement !== this.scrub) this.scrub.value = String(Math.round(fraction * Number(this.scrub.max)));
    this.positionEl.textContent = this.format(player);
    this.bar.dataset.playing = String(player.playing);
    this.scheduleUrl(player.playing ? 500 : 0);
  }

  // While playing, the URL follows at most twice a second; a paused position is written at once,
  // so a link copied (or a reload) right after pausing opens exactly there.
  scheduleUrl(delay) {
    clearTimeout(this.urlTimer);
    const write = () => {
      replaceQuery({ speed: this.player.speed === MAX ? "max" : String(this.player.speed), at: this.player.positionParam() });
    };
    if (delay) this.urlTimer = setTimeout(write, delay);
    else write();
  }

  flash(message) {
    this.positionEl.textContent = message;
    setTimeout(() => this.update(), 1500);
  }

  async copyLink(button) {
    this.scheduleUrl(0);
    await new Promise((resolve) => setTimeout(resolve, 10));
    try {
      await navigator.clipboard.writeText(location.href);
      button.textContent = "Link copied";
    } catch {
      button.textContent = "Copy failed: use the address bar";
    }
    setTimeout(() => { button.textContent = "Copy link"; }, 1500);
  }
}
