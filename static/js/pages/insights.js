// Insights: GET /api/insights/ drawn as a table (one row per model or provider) and line charts
// per bucket. A row or a chart point opens the runs list filtered to it (the API gives the URL).

import { RUN_COLOURS, drawLines, fitCanvas, theme } from "../charts.js";
import { fmtMs } from "../format.js";
import { el } from "../render_util.js";

const rowsEl = document.querySelector("[data-insights-rows]");
const errorEl = document.querySelector("[data-insights-error]");
const rangeEl = document.querySelector("[data-chart-range]");
const PALETTE = [...RUN_COLOURS, "#0b7285", "#862e9c", "#e67700", "#5c940d"];

const pct = (value) => (value === null || value === undefined ? "–" : `${(value * 100).toFixed(1)}%`);
const ms = (value) => (value === null || value === undefined ? "–" : fmtMs(value, 0, 10000));
const num = (value) => (value === null || value === undefined ? "–" : value.toFixed(1));

function showError(message) {
  errorEl.textContent = message;
  errorEl.hidden = false;
  rowsEl.replaceChildren();
}

function renderTable(groups) {
  rowsEl.replaceChildren();
  if (!groups.length) {
    const row = el("tr");
    const cell = el("td", "muted", "No runs in this range.");
    cell.colSpan = 14;
    row.append(cell);
    rowsEl.append(row);
    return;
  }
  for (const group of groups) {
    const row = el("tr");
    row.dataset.groupRow = group.key;
    const link = el("a", "", group.key || "(none)");
    link.href = group.runs_url;
    const keyCell = el("td");
    keyCell.append(link);
    row.append(keyCell);
    const cells = [String(group.runs), ms(group.ttft_ms.p50), ms(group.ttft_ms.p95), ms(group.ttft_ms.p99),
      num(group.tokens_per_s.p50), ms(group.duration_ms.p50), ms(group.duration_ms.p95),
      ms(group.gap_p95_ms ? group.gap_p95_ms.p95 : null), pct(group.failed_rate),
      pct(group.incomplete_rate), pct(group.cancelled_rate), pct(group.interrupted_rate), pct(group.flagged_rate)];
    for (const text of cells) row.append(el("td", "num", text));
    row.addEventListener("click", (e) => { if (e.target !== link) location.assign(group.runs_url); });
    rowsEl.append(row);
  }
}

// The x axis in dates (UTC): at most one label per ~110 px, at bucket starts.
function bucketTicks(starts, origin, bucket, width) {
  const unique = [...new Set(starts)].sort((a, b) => a - b);
  const every = Math.max(1, Math.ceil(unique.length / Math.max(1, Math.floor(width / 110))));
  const label = (ms) => {
    const iso = new Date(ms).toISOString();
    return bucket === "hour" ? `${iso.slice(5, 10)} ${iso.slice(11, 16)}` : iso.slice(0, 10);
  };
  return unique.filter((_, i) => i % every === 0).map((ms) => [ms - origin, label(ms)]);
}

// One chart: a line (and dots) per key; x is the bucket's start, y the bucket's figure.
function renderChart(canvas, data, pick) {
  const starts = data.series.flatMap((s) => s.points.map((p) => Date.parse(p.t)));
  const origin = starts.length ? Math.min(...starts) : Date.parse(data.since);
  const end = starts.length ? Math.max(...starts) : Date.parse(data.until);
  const series = data.series.map((s, i) => ({
    label: s.key || "(none)", colour: PALETTE[i % PALETTE.length], raw: s.points,
    points: s.points.filter((p) => pick(p) !== null).map((p) => [Date.parse(p.t) - origin, pick(p)]),
  }));
  const draw = () => {
    const { ctx, width, height } = fitCanvas(canvas, 220);
    drawLines(ctx, { width, height, series, xStart: 0, xEnd: Math.max(end - origin, 1), yLabel: "", th: theme(),
      xTicks: bucketTicks(starts, origin, data.bucket, width), dots: true });
  };
  draw();
  window.addEventListener("resize", draw);
  // A click opens the runs of the nearest point (in pixels, over every line).
  canvas.onclick = (event) => {
    const box = canvas.getBoundingClientRect();
    const gutter = 48;
    const plotW = box.width - gutter - 12;
    const span = Math.max(end - origin, 1);
    let best = null;
    for (const s of series) {
      for (const p of s.raw) {
        if (pick(p) === null) continue;
        const x = gutter + ((Date.parse(p.t) - origin) / span) * plotW;
        const d = Math.abs(x - (event.clientX - box.left));
        if (!best || d < best.d) best = { d, url: p.runs_url };
      }
    }
    if (best) location.assign(best.url);
  };
  canvas.style.cursor = series.length ? "pointer" : "default";
}

// How exact the percentiles are: read from the roll-up's bins, or over a sample of many runs.
function howMeasured(body) {
  if (body.rolled_up && body.percentiles_within) {
    return ` Percentiles from the hourly roll-up, within ${+(body.percentiles_within * 100).toFixed(1)}%.`;
  }
  if (body.percentiles_sampled_every > 1) return ` Percentiles over 1 in ${body.percentiles_sampled_every} runs.`;
  return "";
}

async function load() {
  const params = new URLSearchParams(location.search);
  if (!params.has("since")) params.set("since", "7d");
  for (const [key, value] of [...params.entries()]) if (!value) params.delete(key);
  const response = await fetch(`/api/insights/?${params}`, { headers: { Accept: "application/json" } });
  const body = await response.json().catch(() => null);
  if (!response.ok || !body || !Array.isArray(body.groups)) {
    showError(body && body.error ? body.error.message : `insights failed (${response.status})`);
    return;
  }
  renderTable(body.groups);
  renderChart(document.querySelector("[data-chart='ttft_ms']"), body, (p) => p.ttft_ms.p50);
  renderChart(document.querySelector("[data-chart='tokens_per_s']"), body, (p) => p.tokens_per_s.p50);
  renderChart(document.querySelector("[data-chart='runs']"), body, (p) => p.runs);
  rangeEl.textContent = `From ${body.since} to ${body.until}, per ${body.bucket} (UTC).${howMeasured(body)}`;
}

load();
