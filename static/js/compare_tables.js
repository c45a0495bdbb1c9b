// The compare page's tables and diff: metrics with the difference to the first run, event counts
// by type, and the word-level diff of final outputs. Everything goes in with textContent.

import { gapStats } from "./charts.js";
import { fmtMs } from "./format.js";
import { el } from "./render_util.js";

export const METRICS = [
  ["ttfe_ms", "First event", "time"],
  ["ttft_ms", "First token", "time"],
  ["duration_ms", "Duration", "time"],
  ["events", "Events", "count"],
  ["output_tokens", "Output tokens", "count"],
  ["tokens_per_s", "Tokens/s", "rate"],
  ["gap_p50_ms", "Gap p50", "time"],
  ["gap_p95_ms", "Gap p95", "time"],
  ["gap_max_ms", "Gap max", "time"],
];

function format(kind, value) {
  if (value === null || value === undefined) return "–";
  if (kind === "time") return fmtMs(value);
  if (kind === "rate") return value.toFixed(1);
  return String(Math.round(value));
}

// Figures of a run still streaming, from what its timeline model has seen so far.
export function liveMetrics(model) {
  const stats = gapStats(model.gaps);
  const n = model.tokens.n;
  const span = n > 1 ? (model.tokens.a[n - 1] - model.firstToken) / 1000 : 0;
  const tokens = model.usageTokens ?? n;
  return {
    ttfe_ms: model.firstEvent, ttft_ms: model.firstText, duration_ms: model.count ? model.lastT : null,
    events: model.count, output_tokens: tokens, output_tokens_estimated: model.usageTokens === null,
    tokens_per_s: span > 0 ? tokens / span : null, gap_p50_ms: stats.p50, gap_p95_ms: stats.p95, gap_max_ms: stats.max,
  };
}

// rows: [{ label, colour, metrics, live }] with the first one the baseline.
export function renderMetricsTable(table, rows) {
  const head = el("thead");
  const headRow = el("tr");
  headRow.append(el("th", "", "Metric"));
  for (const row of rows) {
    const th = el("th");
    const swatch = el("span", "run-swatch");
    swatch.style.background = row.colour;
    th.append(swatch, document.createTextNode(` ${row.short}`));
    if (row.live) th.append(el("span", "live-tag", "live"));
    headRow.append(th);
  }
  head.append(headRow);
  const body = el("tbody");
  for (const [key, label, kind] of METRICS) {
    const tr = el("tr");
    tr.dataset.metric = key;
    tr.append(el("td", "", label));
    const base = rows[0] ? rows[0].metrics[key] : null;
    rows.forEach((row, i) => {
      const value = row.metrics[key];
      const td = el("td");
      td.dataset.run = String(row.id);
      let text = format(kind, value);
      if (key === "output_tokens" && row.metrics.output_tokens_estimated && value !== null) text = `≈${text}`;
      td.append(document.createTextNode(text));
      if (i > 0 && typeof value === "number" && typeof base === "number") td.append(differenceTag(kind, key, value - base));
      tr.append(td);
    });
    body.append(tr);
  }
  table.replaceChildren(head, body);
}

function differenceTag(kind, key, delta) {
  if (Math.abs(delta) < 1e-9) return el("span", "diff-same", "=");
  const better = key === "tokens_per_s" ? delta > 0 : kind === "time" ? delta < 0 : null;
  const cls = better === null ? "diff-same" : better ? "diff-down" : "diff-up";
  const sign = delta > 0 ? "+" : "−";
  const magnitude = format(kind, Math.abs(delta));
  return el("span", cls, `${sign}${magnitude}`);
}

// counts: one Map(type → n) per run.
export function renderCountsTable(table, rows, counts) {
  const types = [...new Set(counts.flatMap((c) => [...c.keys()]))].sort();
  const head = el("thead");
  const headRow = el("tr");
  headRow.append(el("th", "", "Event type"));
  for (const row of rows) {
    const th = el("th");
    const swatch = el("span", "run-swatch");
    swatch.style.background = row.colour;
    th.append(swatch, document.createTextNode(` ${row.short}`));
    headRow.append(th);
  }
  head.append(headRow);
  const body = el("tbody");
  for (const type of types) {
    const tr = el("tr");
    tr.append(el("td", "", type));
    counts.forEach((c) => tr.append(el("td", "", String(c.get(type) || 0))));
    body.append(tr);
  }
  const total = el("tr");
  total.append(el("td", "", "all events"));
  counts.forEach((c) => total.append(el("td", "", String([...c.values()].reduce((a, b) => a + b, 0)))));
  body.append(total);
  table.replaceChildren(head, body);
}

// diff: { base, other, ops: [[op, text]], similarity, unit } from /api/compare/.
export function renderDiff(box, diff) {
  if (!diff) {
    box.replaceChildren(el("p", "muted", "Compare at least two runs to see a diff of their outputs."));
    return;
  }
  const nodes = diff.ops.map(([op, text]) => (op === "equal" ? document.createTextNode(text) : el(op === "insert" ? "ins" : "del", "", text)));
  if (!diff.ops.length) nodes.push(el("span", "muted", "Both outputs are empty."));
  box.replaceChildren(...nodes);
}
