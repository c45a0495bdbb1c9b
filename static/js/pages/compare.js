// The compare page: up to four runs on one time axis. Each run is followed over its websocket
// (RunSocket, live or stored alike) into a compact RunView whose timeline sits in the stacked
// timelines card; all timelines share one Viewport. Figures of finished runs come from
// /api/compare/ (streams/history/compare.py); a run still streaming shows live figures from its
// timeline.

import { RUN_COLOURS, drawLines, fitCanvas } from "../charts.js";
import { liveMetrics, renderCountsTable, renderDiff, renderMetricsTable } from "../compare_tables.js";
import { fmtMs } from "../format.js";
import { ReplayControls, ReplayPlayer, ReplayTrack, replaceQuery } from "../replay.js";
import { BadReplayParameter, parseSpeed } from "../replay_clock.js";
import { isTerminalStatus } from "../run_status.js";
import { RunView } from "../runview.js";
import { RunSocket } from "../socket.js";
import { exportPicture } from "../svgctx.js";
import { TimelinePanel } from "../timeline.js";
import { Viewport } from "../viewport.js";

const page = document.querySelector("[data-compare]");
let data = JSON.parse(document.getElementById("compare-data").textContent);
const runsJson = JSON.parse(document.getElementById("runs-data").textContent);
const params = new URLSearchParams(location.search);
const viewport = new Viewport();
const template = document.getElementById("timeline-template");
const cumulativeCanvas = page.querySelector("[data-cumulative]");
const replayBar = page.querySelector("[data-replay-bar]");
const replayButton = page.querySelector("[data-replay-toggle]");
let align = params.get("align") === "first_token" ? "first_token" : "start";
let diffIndex = 0;
let player = null;
replayBar.hidden = true;

const runs = runsJson.map((run, i) => {
  const colour = RUN_COLOURS[i % RUN_COLOURS.length];
  const entry = data.runs[i];
  const holder = document.createElement("div");
  holder.className = "compare-timeline";
  const title = document.createElement("div");
  title.className = "compare-run-title";
  const swatch = document.createElement("span");
  swatch.className = "run-swatch";
  swatch.style.background = colour;
  const label = document.createElement("strong");
  label.textContent = `#${run.id}`;
  const detail = document.createElement("span");
  detail.className = "muted";
  detail.textContent = entry.label;
  title.append(swatch, label, detail);
  const root = template.content.firstElementChild.cloneNode(true);
  holder.append(title, root);
  page.querySelector("[data-timelines]").append(holder);
  const panel = new TimelinePanel(root, { viewport, filename: `run-${run.id}` });
  const col = page.querySelector(`[data-compare-col][data-run-id="${run.id}"]`);
  col.querySelector("[data-swatch]").style.background = colour;
  const view = new RunView(col.querySelector("[data-runview]"), { timeline: panel });
  const state = { run, entry, colour, panel, view, events: [], status: run.status, short: `#${run.id}` };
  panel.onPick = (seq) => { if (player) player.seekSeq(runsJson.indexOf(run), seq); };
  return state;
});

function offsetOf(state) {
  if (align !== "first_token") return 0;
  const ttft = state.entry.metrics.ttft_ms ?? state.panel.model.firstToken;
  return ttft || 0;
}

function applyAlignment() {
  for (const button of page.querySelectorAll("[data-align]")) button.setAttribute("aria-pressed", String(button.dataset.align === align));
  runs.forEach((state, i) => {
    state.panel.setOffset(offsetOf(state));
    if (player) player.tracks[i].offset = offsetOf(state);
  });
  viewport.reset();
  if (player) player.seekClock(player.clock);
  replaceQuery({ align: align === "first_token" ? "first_token" : null });
  scheduleCharts();
}

// --- figures ---------------------------------------------------------------------------------
function isLive(state) { return !isTerminalStatus(state.status); }

function rowsForTables() {
  return runs.map((state) => ({
    id: state.run.id, short: state.short, colour: state.colour, live: isLive(state),
    metrics: isLive(state) ? liveMetrics(state.panel.model) : state.entry.metrics,
  }));
}

function seriesFor(state) {
  const points = isLive(state) || !state.entry.cumulative_tokens.length ? state.panel.model.cumulativeTokens() : state.entry.cumulative_tokens;
  const offset = offsetOf(state);
  return { label: `#${state.run.id} ${state.entry.model}`, colour: state.colour, points: points.map(([x, y]) => [x - offset, y]) };
}

function paintCumulative(ctx, width, height) {
  // Runs without timings (imported SSE) have no place on a time axis.
  const timed = runs.filter((state) => state.entry.timed !== false);
  const skipped = runs.length - timed.length;
  const label = align === "first_token" ? "output tokens (t = 0 at first token)" : "output tokens";
  drawLines(ctx, { width, height, series: timed.map(seriesFor), xStart: viewport.start, xEnd: viewport.end,
    yLabel: skipped ? `${label} · ${skipped} untimed run${skipped > 1 ? "s" : ""} left out` : label,
    cursor: player ? player.clock : null });
}

let chartsFrame = 0;
let lastTables = 0;
function scheduleCharts() {
  if (chartsFrame) return;
  chartsFrame = requestAnimationFrame(() => {
    chartsFrame = 0;
    const { ctx, width, height } = fitCanvas(cumulativeCanvas, 220);
    paintCumulative(ctx, width, height);
    if (performance.now() - lastTables > 300 || runs.every((s) => !isLive(s))) {
      lastTables = performance.now();
      renderMetricsTable(page.querySelector("[data-metrics-table]"), rowsForTables());
      renderCountsTable(page.querySelector("[data-counts-table]"), rowsForTables(),
        runs.map((s) => (isLive(s) ? s.panel.model.counts : new Map(Object.entries(s.entry.counts)))));
    }
  });
}
viewport.listeners.add(scheduleCharts);

function renderDiffTabs() {
  const tabs = page.querySelector("[data-diff-tabs]");
  const buttons = data.diffs.map((diff, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "tool";
    const live = runs.some(isLive);
    button.textContent = `#${diff.base} → #${diff.other}${live ? "" : ` · ${Math.round(diff.similarity * 100)}% alike`}`;
    button.setAttribute("aria-pressed", String(i === diffIndex));
    button.addEventListener("click", () => { diffIndex = i; renderDiffTabs(); });
    return button;
  });
  tabs.replaceChildren(...buttons);
  const box = page.querySelector("[data-word-diff]");
  if (runs.some(isLive)) {
    box.replaceChildren(document.createTextNode("The diff appears when every run has finished."));
    box.classList.add("muted");
    return;
  }
  box.classList.remove("muted");
  renderDiff(box, data.diffs[diffIndex]);
}

let refreshTimer = 0;
function refreshFromServer() {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(async () => {
    const ids = runsJson.map((r) => r.id).join(",");
    const response = await fetch(`/api/compare/?runs=${ids}`, { credentials: "same-origin" });
    if (!response.ok) return;
    data = await response.json();
    runs.forEach((state, i) => { state.entry = data.runs[i]; });
    if (align === "first_token") applyAlignment();
    renderDiffTabs();
    lastTables = 0;
    scheduleCharts();
    maybeEnableReplay();
  }, 150);
}

// --- following the runs ------------------------------------------------------------------------
for (const state of runs) {
  state.view.setStatus(state.run.status);
  const socket = new RunSocket(state.run.id, {
    onEvents: (events) => {
      for (const e of events) state.events.push(e);
      if (!player) state.view.addEvents(events);
      scheduleCharts();
    },
    onStatus: (frame) => {
      const was = state.status;
      state.status = frame.status;
      if (!player) state.view.setStatus(frame.status, frame.metrics, frame.error);
      if (isTerminalStatus(frame.status)) {
        state.loaded = true;
        if (!isTerminalStatus(was)) refreshFromServer();
      }
      scheduleCharts();
      maybeEnableReplay();
    },
    onConnection: (conn) => state.view.setConnection(conn),
  });
  socket.startWithHistory(state.run.event_count);
}

// --- synchronised replay -------------------------------------------------------------------
function maybeEnableReplay() {
  const ready = runs.every((s) => s.loaded);
  replayButton.disabled = !ready;
  replayButton.title = ready ? "Replay every run together on the shared clock" : "Available once every run has finished";
  if (ready) renderDiffTabs();
  if (ready && !player && params.get("at")) startReplay();
}

function startReplay() {
  if (player) return;
  const tracks = runs.map((state) => new ReplayTrack({ run: { ...state.run, status: state.status }, events: state.events,
    view: state.view, offset: offsetOf(state) }));
  let speed = 1;
  try { speed = parseSpeed(params.get("speed")); } catch (err) { if (!(err instanceof BadReplayParameter)) throw err; }
  player = new ReplayPlayer(tracks, { speed });
  const typeCounts = new Map();
  for (const state of runs) for (const e of state.events) typeCounts.set(e.type, (typeCounts.get(e.type) || 0) + 1);
  const controls = new ReplayControls(replayBar, player, {
    typeCounts,
    format: (p) => `${fmtMs(p.clock)} of ${fmtMs(p.low())} … ${fmtMs(p.high())}`,
  });
  player.onChange = () => { controls.update(); scheduleCharts(); };
  replayBar.hidden = false;
  replayButton.textContent = "Stop replay";
  // Several runs share one clock, so a compare link's position is a time on the shared axis.
  const at = /^(-?\d+(?:\.\d+)?)(?:ms)?$/.exec(params.get("at") || "");
  player.seekClock(at ? Number(at[1]) : player.low());
  controls.update();
  replayBar.dataset.ready = "true";
}

function stopReplay() {
  player.pause();
  player.seekClock(player.high());
  for (const state of runs) state.panel.setCursor(null, 0);
  replayBar.hidden = true;
  replayButton.textContent = "Replay together";
  replaceQuery({ at: null, speed: null });
  player = null;
}

replayButton.addEventListener("click", () => (player ? stopReplay() : startReplay()));
for (const button of page.querySelectorAll("[data-align]")) {
  button.addEventListener("click", () => { align = button.dataset.align; applyAlignment(); });
}

// --- pictures --------------------------------------------------------------------------------
function exportTimelines(format) {
  const width = Math.max(800, page.querySelector("[data-timelines]").clientWidth);
  const heights = runs.map((s) => s.panel.height());
  exportPicture(format, width, heights.reduce((a, b) => a + b + 6, 0), (ctx) => {
    ctx.save();
    runs.forEach((state) => {
      const h = state.panel.paintPicture(ctx, width, false, `#${state.run.id} ${state.entry.label}`);
      ctx.translate(0, h + 6);
    });
    ctx.restore();
  }, `compare-${runsJson.map((r) => r.id).join("-")}-timelines`);
}

for (const button of page.querySelectorAll("[data-export-timelines]")) {
  button.addEventListener("click", () => exportTimelines(button.dataset.exportTimelines));
}
for (const button of page.querySelectorAll("[data-export-cumulative]")) {
  button.addEventListener("click", () => {
    const width = Math.max(640, cumulativeCanvas.clientWidth);
    exportPicture(button.dataset.exportCumulative, width, 260, (ctx) => paintCumulative(ctx, width, 260),
      `compare-${runsJson.map((r) => r.id).join("-")}-tokens`);
  });
}
for (const button of page.querySelectorAll("[data-compare-zoom]")) {
  button.addEventListener("click", () => {
    const kind = button.dataset.compareZoom;
    if (kind === "in") viewport.zoom(0.6); else if (kind === "out") viewport.zoom(1 / 0.6); else viewport.reset();
  });
}

new ResizeObserver(scheduleCharts).observe(cumulativeCanvas.parentElement);
applyAlignment();
renderDiffTabs();
maybeEnableReplay();
