// The replay page: a stored run played back through the shared RunView at its original pace,
// with the position and speed kept in the URL (?speed=0.25..10|max&at=<ms>|seq<N>).

import { apiPost, csrfToken } from "../api.js";
import { fetchAllEvents } from "../event_pages.js";
import { fmtMs } from "../format.js";
import { ReplayControls, ReplayPlayer, ReplayTrack } from "../replay.js";
import { BadReplayParameter, UNTIMED_PACE_MS, parsePosition, parseSpeed } from "../replay_clock.js";
import { RunView } from "../runview.js";

const run = JSON.parse(document.getElementById("run-data").textContent);
const view = new RunView(document.querySelector("[data-runview]"), { filename: `run-${run.id}-replay` });
const note = document.querySelector("[data-replay-note]");
const bar = document.querySelector("[data-replay-bar]");

function showNote(text) {
  note.textContent = text;
  note.hidden = !text;
}

async function main() {
  view.setConnection("loading events…");
  let events;
  try {
    events = await fetchAllEvents(run.id, run.event_count);
  } catch (err) {
    view.setError({ message: err.message });
    return;
  }
  view.setConnection("done");
  const track = new ReplayTrack({ run, events, view });
  const params = new URLSearchParams(location.search);
  const notes = [];
  let speed = 1;
  try {
    speed = parseSpeed(params.get("speed"));
  } catch (err) {
    if (!(err instanceof BadReplayParameter)) throw err;
    notes.push(`${err.message}; playing at 1×.`);
  }
  if (track.untimed) notes.push(`This run has no timings (imported): it replays in order, one event every ${UNTIMED_PACE_MS} ms at 1×.`);
  if (!events.length) notes.push("This run has no events to replay.");

  const typeCounts = new Map();
  for (const e of events) typeCounts.set(e.type, (typeCounts.get(e.type) || 0) + 1);
  const player = new ReplayPlayer([track], { speed });
  const controls = new ReplayControls(bar, player, {
    typeCounts,
    format: (p) => {
      const { index } = track.position;
      const at = track.untimed ? `event ${index}` : `${fmtMs(Math.max(0, p.clock))} / ${fmtMs(p.high())}`;
      return `${index} / ${events.length} events · ${at}`;
    },
  });
  player.onChange = () => controls.update();

  // Clicking a mark not replayed yet moves the replay there; the timeline ruler scrubs.
  if (view.timeline) {
    view.timeline.onPick = (seq, pending) => {
      if (pending) player.pause();
      if (pending) player.seekSeq(0, seq);
      if (view.list) view.list.selectSeq(seq);
    };
    view.timeline.onScrub = (x) => {
      player.pause();
      player.seekClock(track.untimed ? Math.round(x) * UNTIMED_PACE_MS : x);
    };
  }

  let start = { index: 0, clockMs: 0 };
  try {
    start = parsePosition(params.get("at"), track.times);
  } catch (err) {
    if (!(err instanceof BadReplayParameter)) throw err;
    notes.push(`${err.message}; starting at the beginning.`);
  }
  showNote(notes.join(" "));
  player.seekTrack(0, start);
  controls.update();
  bar.dataset.ready = "true";
  if (params.get("play") === "1") player.play();
}

// Replay token (owner only): made on demand, shown once, revocable.
function bindTokenBox() {
  const box = document.querySelector("[data-upstream]");
  if (!box) return;
  const id = box.dataset.runId;
  const make = box.querySelector("[data-token-new]");
  const revoke = box.querySelector("[data-token-revoke]");
  const state = box.querySelector("[data-token-state]");
  const shown = box.querySelector("[data-token-box]");
  const value = box.querySelector("[data-token-value]");
  make.addEventListener("click", async () => {
    make.disabled = true;
    try {
      const data = await apiPost(`/api/runs/${id}/replay-token/`);
      value.textContent = data.token;
      shown.hidden = false;
      revoke.hidden = false;
      make.textContent = "Replace the replay token";
      state.textContent = "New token made; any earlier one no longer works.";
    } catch (err) {
      state.textContent = `Could not make a token: ${err.message}`;
    } finally {
      make.disabled = false;
    }
  });
  revoke.addEventListener("click", async () => {
    try {
      const response = await fetch(`/api/runs/${id}/replay-token/`, {
        method: "DELETE", credentials: "same-origin",
        headers: { "X-CSRFToken": csrfToken() },
      });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      shown.hidden = true;
      value.textContent = "";
      revoke.hidden = true;
      make.textContent = "Make a replay token";
      state.textContent = "Revoked: no token opens this run now.";
    } catch (err) {
      state.textContent = `Could not revoke: ${err.message}`;
    }
  });
}

bindTokenBox();
main().catch((err) => {
  console.error(err);
  view.setError({ message: `Replay failed: ${err.message}` });
});
