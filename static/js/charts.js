// Charts drawn on a canvas-like context (a <canvas> 2D context or svgctx.SvgContext): time axis,
// token rate over time, histogram of gaps between deltas, cumulative lines for compare.
// Every function takes CSS-pixel sizes and a theme (colours from the page's CSS variables).

export const FONT = "11px system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
export const MONO = "11px ui-monospace, Menlo, Consolas, monospace";
export const RUN_COLOURS = ["#2f6fde", "#d9480f", "#2b8a3e", "#ae3ec9"];

let themeCache = null;
if (typeof window !== "undefined" && window.matchMedia) {
  window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => { themeCache = null; });
}

export function theme() {
  if (themeCache) return themeCache;
  const style = getComputedStyle(document.documentElement);
  const read = (name, fallback) => style.getPropertyValue(name).trim() || fallback;
  themeCache = {
    panel: read("--panel", "#fff"), text: read("--text", "#1b1f24"), muted: read("--muted", "#667085"),
    border: read("--border", "#d9dee5"), accent: read("--accent", "#2f6fde"), stripe: read("--code-bg", "#f1f3f6"),
    ok: read("--ok", "#1f8a4c"), warn: read("--warn", "#b7791f"), error: read("--error", "#c0352b"),
  };
  return themeCache;
}

// Nearest-rank percentile of a sorted array, as streams/protocol/metrics.py computes it.
export function percentile(sorted, fraction) {
  if (!sorted.length) return null;
  return sorted[Math.max(1, Math.ceil(fraction * sorted.length)) - 1];
}

export function gapStats(gaps) {
  const sorted = Float64Array.from(gaps).sort();
  return { sorted, count: sorted.length, p50: percentile(sorted, 0.5), p95: percentile(sorted, 0.95),
    max: sorted.length ? sorted[sorted.length - 1] : null };
}

export function niceStep(range, targetTicks) {
  const raw = Math.max(range / Math.max(1, targetTicks), 1e-9);
  const power = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function tickLabel(value, step, untimed) {
  if (untimed) return `#${Math.round(value)}`;
  if (Math.abs(value) < 1e-9) return "0";
  if (step >= 1000) return `${+(value / 1000).toFixed(step >= 10000 ? 0 : 1)} s`;
  if (step >= 1) return `${Math.round(value)} ms`;
  return `${value.toFixed(1)} ms`;
}

// Ticks of the x axis between start and end, drawn at [x0, x0 + width]; lines run down `height`.
export function drawTimeAxis(ctx, { x0, width, y, height, start, end, untimed = false, th = theme(), labels = true }) {
  const span = Math.max(end - start, 1e-6);
  let step = niceStep(span, Math.max(2, Math.floor(width / 90)));
  if (untimed) step = Math.max(1, Math.round(step));
  ctx.save();
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  ctx.textAlign = "center";
  for (let v = Math.ceil(start / step) * step; v <= end + 1e-9; v += step) {
    const x = x0 + ((v - start) / span) * width;
    ctx.fillStyle = th.border;
    ctx.fillRect(Math.round(x), y, 1, height);
    if (labels) {
      ctx.fillStyle = th.muted;
      ctx.fillText(tickLabel(v, step, untimed), Math.min(Math.max(x, x0 + 14), x0 + width - 20), y - 8);
    }
  }
  ctx.restore();
}

// Tokens per second over the visible window: token-delta times bucketed every few pixels.
export function drawRateChart(ctx, { width, height, gutter, start, end, tokenTimes, count, colour, th = theme(), untimed }) {
  ctx.save();
  ctx.fillStyle = th.panel;
  ctx.fillRect(0, 0, width, height);
  ctx.font = FONT;
  ctx.fillStyle = th.muted;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText("tokens/s", 6, 4);
  const plotW = width - gutter - 8;
  const top = 18;
  const plotH = height - top - 4;
  if (untimed || !count || plotW < 20) {
    ctx.fillText(untimed ? "no timings in this run" : "no token deltas yet", gutter + 6, top + 4);
    ctx.restore();
    return;
  }
  const buckets = Math.max(8, Math.min(240, Math.floor(plotW / 4)));
  const span = Math.max(end - start, 1e-6);
  const bucketMs = span / buckets;
  // Tokens in a sliding window around each bucket: a readable rate, not a comb of 0s and 1s.
  const windowMs = Math.max(bucketMs, span / 40);
  const rates = new Float64Array(buckets);
  for (let b = 0; b < buckets; b++) {
    const center = start + (b + 0.5) * bucketMs;
    const from = Math.max(center - windowMs / 2, tokenTimes[0]);
    const to = Math.min(center + windowMs / 2, tokenTimes[count - 1]);
    const n = lowerBound(tokenTimes, count, center + windowMs / 2) - lowerBound(tokenTimes, count, center - windowMs / 2);
    rates[b] = n ? n / (Math.max(to - from, windowMs / 2) / 1000) : 0;
  }
  let peak = 0;
  for (const r of rates) peak = Math.max(peak, r);
  const yMax = peak > 0 ? niceStep(peak, 2) * Math.ceil(peak / niceStep(peak, 2)) : 1;
  ctx.fillStyle = th.border;
  ctx.fillRect(gutter, top + plotH, plotW, 1);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  ctx.fillStyle = th.muted;
  ctx.fillText(`${Math.round(yMax)}`, gutter - 6, top + 4);
  ctx.fillText("0", gutter - 6, top + plotH - 2);
  ctx.beginPath();
  ctx.moveTo(gutter, top + plotH);
  for (let b = 0; b < buckets; b++) {
    const x0 = gutter + (b / buckets) * plotW;
    const x1 = gutter + ((b + 1) / buckets) * plotW;
    const y = top + plotH - (rates[b] / yMax) * plotH;
    ctx.lineTo(x0, y);
    ctx.lineTo(x1, y);
  }
  ctx.lineTo(gutter + plotW, top + plotH);
  ctx.closePath();
  ctx.globalAlpha = 0.35;
  ctx.fillStyle = colour;
  ctx.fill();
  ctx.globalAlpha = 1;
  ctx.strokeStyle = colour;
  ctx.lineWidth = 1.5;
  ctx.stroke();
  ctx.restore();
}

function lowerBound(values, count, target) {
  let lo = 0;
  let hi = count;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (values[mid] < target) lo = mid + 1; else hi = mid;
  }
  return lo;
}

// Histogram of gaps between deltas on a log scale (5 bins a decade, 0.1 ms .. 10 s).
const BIN_LOW = -1;
const BINS_PER_DECADE = 5;
const BIN_COUNT = 5 * BINS_PER_DECADE;

export function histogramBins(sorted) {
  const bins = new Array(BIN_COUNT).fill(0);
  for (const gap of sorted) {
    const k = gap <= 0 ? 0 : Math.floor((Math.log10(gap) - BIN_LOW) * BINS_PER_DECADE);
    bins[Math.min(BIN_COUNT - 1, Math.max(0, k))] += 1;
  }
  return bins;
}

export function drawHistogram(ctx, { width, height, stats, colour, th = theme() }) {
  ctx.save();
  ctx.fillStyle = th.panel;
  ctx.fillRect(0, 0, width, height);
  ctx.font = FONT;
  ctx.fillStyle = th.muted;
  ctx.textBaseline = "top";
  ctx.textAlign = "left";
  ctx.fillText("gaps between deltas (log scale)", 6, 4);
  const left = 8;
  const top = 20;
  const plotW = width - 16;
  const plotH = height - top - 18;
  if (!stats.count) {
    ctx.fillText("no gaps yet", left, top + 6);
    ctx.restore();
    return;
  }
  const bins = histogramBins(stats.sorted);
  const peak = Math.max(...bins);
  const barW = plotW / BIN_COUNT;
  ctx.fillStyle = colour;
  for (let k = 0; k < BIN_COUNT; k++) {
    if (!bins[k]) continue;
    const h = Math.max(1, (bins[k] / peak) * plotH);
    ctx.fillRect(left + k * barW + 0.5, top + plotH - h, Math.max(1, barW - 1), h);
  }
  const xOf = (ms) => left + (Math.log10(Math.max(ms, 0.1)) - BIN_LOW) * BINS_PER_DECADE * barW;
  ctx.fillStyle = th.border;
  ctx.fillRect(left, top + plotH, plotW, 1);
  ctx.fillStyle = th.muted;
  ctx.textAlign = "center";
  for (const [ms, label] of [[1, "1 ms"], [10, "10 ms"], [100, "100 ms"], [1000, "1 s"]]) {
    ctx.fillRect(xOf(ms), top + plotH, 1, 4);
    ctx.fillText(label, xOf(ms), top + plotH + 6);
  }
  let row = 0;
  for (const [value, label, tone] of [[stats.p50, "p50", th.text], [stats.p95, "p95", th.warn]]) {
    const x = xOf(value);
    ctx.fillStyle = tone;
    ctx.fillRect(x, top, 1, plotH);
    ctx.textBaseline = "top";
    const right = x > left + plotW - 30;
    const w = ctx.measureText(label).width + 4;
    const lx = right ? x - 3 - w : x + 2;
    ctx.fillStyle = th.panel;
    ctx.fillRect(lx, top + row * 12, w, 12);
    ctx.fillStyle = tone;
    ctx.textAlign = "left";
    ctx.fillText(label, lx + 2, top + row * 12 + 1);
    row += 1;
  }
  ctx.restore();
}

// Lines for compare: series = [{ label, colour, points: [[x, y], ...] }] on shared axes.
// xTicks: optional [[x, label], ...] to label the x axis (e.g. dates) instead of time offsets;
// dots: mark every point too (a series of one point has no line to show).
export function drawLines(ctx, { width, height, series, xStart, xEnd, yLabel, cursor = null, th = theme(),
  xTicks = null, dots = false }) {
  const gutter = 48;
  ctx.save();
  ctx.fillStyle = th.panel;
  ctx.fillRect(0, 0, width, height);
  ctx.font = FONT;
  // Legend first (it wraps on narrow screens), then the plot under it.
  const legend = [];
  let lx = 6 + ctx.measureText(yLabel).width + 18;
  let row = 0;
  for (const s of series) {
    const text = s.label.length > 28 ? `${s.label.slice(0, 27)}…` : s.label;
    const w = 16 + ctx.measureText(text).width + 14;
    if (lx + w > width - 6 && lx > 6) { row += 1; lx = 6; }
    legend.push([s.colour, text, lx, 4 + row * 15]);
    lx += w;
  }
  const top = 14 + (row + 1) * 15;
  const bottom = 24;
  const plotW = width - gutter - 12;
  const plotH = Math.max(20, height - top - bottom);
  ctx.textAlign = "left";
  ctx.textBaseline = "top";
  ctx.fillStyle = th.muted;
  ctx.fillText(yLabel, 6, 4);
  for (const [colour, text, x, y] of legend) {
    ctx.fillStyle = colour;
    ctx.fillRect(x, y + 5, 12, 3);
    ctx.fillStyle = th.text;
    ctx.fillText(text, x + 16, y);
  }
  let yMax = 0;
  for (const s of series) for (const [, y] of s.points) yMax = Math.max(yMax, y);
  const yStep = Math.max(1, niceStep(yMax || 1, 4)); // token counts are whole numbers
  yMax = Math.max(yStep, Math.ceil((yMax || 1) / yStep) * yStep);
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (let v = 0; v <= yMax + 1e-9; v += yStep) {
    const y = top + plotH - (v / yMax) * plotH;
    ctx.fillStyle = th.border;
    ctx.fillRect(gutter, Math.round(y), plotW, 1);
    ctx.fillStyle = th.muted;
    ctx.fillText(String(Math.round(v)), gutter - 6, y);
  }
  const span = Math.max(xEnd - xStart, 1e-6);
  if (xTicks) {
    ctx.textAlign = "center";
    for (const [x, label] of xTicks) {
      const px = gutter + ((x - xStart) / span) * plotW;
      ctx.fillStyle = th.border;
      ctx.fillRect(Math.round(px), top + plotH, 1, 4);
      ctx.fillStyle = th.muted;
      ctx.fillText(label, Math.min(Math.max(px, gutter + 24), gutter + plotW - 24), height - 12);
    }
  } else {
    drawTimeAxis(ctx, { x0: gutter, width: plotW, y: top + plotH, height: 4, start: xStart, end: xEnd, th, labels: false });
    drawTimeAxis(ctx, { x0: gutter, width: plotW, y: height - 4, height: 0, start: xStart, end: xEnd, th });
  }
  for (const s of series) {
    ctx.strokeStyle = s.colour;
    ctx.lineWidth = 2;
    ctx.beginPath();
    const toPx = (x, y) => [gutter + ((x - xStart) / span) * plotW, top + plotH - (y / yMax) * plotH];
    // Each segment is clipped to the visible window (zoomed in, lines must not spill out).
    let pen = false;
    for (let i = 1; i < s.points.length; i++) {
      let [x0, y0] = s.points[i - 1];
      let [x1, y1] = s.points[i];
      if (x1 < xStart || x0 > xEnd) { pen = false; continue; }
      if (x0 < xStart && x1 > x0) { y0 += ((xStart - x0) / (x1 - x0)) * (y1 - y0); x0 = xStart; }
      if (x1 > xEnd && x1 > x0) { y1 = y0 + ((xEnd - x0) / (x1 - x0)) * (y1 - y0); x1 = xEnd; }
      if (!pen) ctx.moveTo(...toPx(x0, y0));
      ctx.lineTo(...toPx(x1, y1));
      pen = true;
    }
    ctx.stroke();
    if (dots) {
      ctx.fillStyle = s.colour;
      for (const [x, y] of s.points) {
        if (x < xStart || x > xEnd) continue;
        const [px, py] = toPx(x, y);
        ctx.beginPath();
        ctx.arc(px, py, 3, 0, 2 * Math.PI);
        ctx.fill();
      }
    }
  }
  if (cursor !== null && cursor >= xStart && cursor <= xEnd) {
    ctx.globalAlpha = 0.55;
    ctx.fillStyle = th.text;
    ctx.fillRect(gutter + ((cursor - xStart) / span) * plotW - 1, top, 2, plotH);
  }
  ctx.restore();
}

// A canvas sized to its box at the screen's pixel ratio; returns the context in CSS pixels.
export function fitCanvas(canvas, height) {
  const ratio = Math.max(1, window.devicePixelRatio || 1);
  const width = canvas.parentElement.clientWidth;
  if (height !== undefined && canvas.style.height !== `${height}px`) canvas.style.height = `${height}px`;
  const h = height !== undefined ? height : canvas.clientHeight;
  const pw = Math.max(1, Math.round(width * ratio));
  const ph = Math.max(1, Math.round(h * ratio));
  if (canvas.width !== pw || canvas.height !== ph) {
    canvas.width = pw;
    canvas.height = ph;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, width, height: h };
}
