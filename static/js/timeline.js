// The timeline panel: one renderer for live runs, replays and compare. Feed it event records
// (RunView does, once per animation frame); it draws lanes of marks on a <canvas>, with hover
// details, click-to-select, zoom (wheel, buttons, keys) and pan (drag), a token-rate chart and a
// histogram of gaps between deltas. Several panels can share one Viewport (compare).

import { catalogueData } from "./catalogue.js";
import { drawHistogram, drawRateChart, fitCanvas, gapStats, theme } from "./charts.js";
import { fmtMs } from "./format.js";
import { exportPicture } from "./svgctx.js";
import { TimelineModel } from "./timeline_model.js";
import { RULER, gutterFor, laneHeight, paintTimeline, timelineHeight } from "./timeline_paint.js";
import { fillTip } from "./timeline_tip.js";
import { Viewport } from "./viewport.js";

const CHART_INTERVAL_MS = 250;
const RATE_H = 96;
const HIST_H = 96;

let coloursApplied = false;
// The event list and item borders use --fam-* variables: give them the catalogue's colours too,
// so a family looks the same everywhere (CSSOM, allowed by the CSP).
function applyFamilyColours() {
  if (coloursApplied) return;
  coloursApplied = true;
  for (const family of catalogueData().families) {
    document.documentElement.style.setProperty(`--fam-${family.name}`, family.colour);
  }
}

export class TimelinePanel {
  constructor(root, { viewport = null, title = "", filename = "run", onPick = null, onScrub = null } = {}) {
    applyFamilyColours();
    this.root = root;
    this.canvas = root.querySelector("[data-timeline-canvas]");
    this.wrap = root.querySelector("[data-timeline-wrap]");
    this.tip = root.querySelector("[data-timeline-tip]");
    this.rateCanvas = root.querySelector("[data-rate-chart]");
    this.gapCanvas = root.querySelector("[data-gap-chart]");
    this.gapStatsEl = root.querySelector("[data-gap-stats]");
    this.legendEl = root.querySelector("[data-legend]");
    this.title = title;
    this.filename = filename;
    this.onPick = onPick;
    this.onScrub = onScrub;
    this.model = new TimelineModel();
    this.colours = this.model.families.map((f) => f.colour);
    this.viewport = viewport || new Viewport();
    this.viewport.sources.add(this);
    this.viewport.listeners.add(() => this.requestDraw(true));
    this.offset = 0;
    this.forceUntimed = false;
    this.final = false;
    this.ghost = false;
    this.shown = null;
    this.cursor = null;
    this.hover = -1;
    this.selected = -1;
    this.frame = 0;
    this.chartsAt = 0;
    this.chartsTimer = 0;
    this.legendKey = "";
    this.statsVersion = -1;
    this.bind();
    new ResizeObserver(() => this.requestDraw(true)).observe(this.wrap);
  }

  // --- feeding ------------------------------------------------------------------------------
  reset() {
    if (this.ghost) {
      this.shown = 0;
    } else {
      this.model.reset();
      this.final = false;
      this.viewport.fit = true;
      // A new run on the same panel (the playground): start from a short axis again.
      if (this.viewport.sources.size === 1) { this.viewport.start = 0; this.viewport.end = 1000; }
    }
    this.hover = -1;
    this.selected = -1;
    this.hideTip();
    this.requestDraw(true);
  }

  append(records) {
    if (!records.length) return;
    if (this.ghost) this.shown = Math.min(this.model.count, (this.shown || 0) + records.length);
    else this.model.append(records);
    this.requestDraw();
  }

  // Replay: the whole run is known up front and drawn faint; appended events light up.
  setGhost(records) {
    this.ghost = true;
    this.model.reset();
    this.model.append(records);
    this.shown = 0;
    this.final = true;
    this.viewport.fit = true;
    this.requestDraw(true);
  }

  setFinal(final) {
    if (this.final === final) return;
    this.final = final;
    this.requestDraw(true);
  }

  setUntimed(untimed) {
    this.forceUntimed = untimed;
    this.requestDraw(true);
  }

  // Imported SSE files carry no timings (every t is 0; a HAR gives every event the same t):
  // such runs are drawn in event order instead of on a time axis.
  get untimed() {
    const m = this.model;
    return Boolean(this.forceUntimed || (m.count > 1 && m.lastT === m.firstEvent && (m.lastT === 0 || this.final)));
  }

  setOffset(ms) {
    this.offset = ms || 0;
    this.viewport.fit = true;
    this.requestDraw(true);
  }

  setCursor(ms, index) {
    this.cursor = ms;
    this.cursorIndex = index;
    this.requestDraw();
  }

  highlight(seq) {
    const n = this.model.count;
    let index = seq < n && this.model.seq.a[seq] === seq ? seq : -1;
    if (index < 0) for (let i = 0; i < n; i++) if (this.model.seq.a[i] === seq) { index = i; break; }
    this.selected = index;
    this.requestDraw();
  }

  extent() {
    const n = this.model.count;
    const hi = this.untimed ? Math.max(n - 1, 1) : Math.max(this.model.lastT, 1);
    return { lo: Math.min(0, -this.offset), hi: hi - this.offset, live: !this.final && !this.ghost, untimed: this.untimed };
  }

  endMs() {
    if (this.model.end !== null) return this.model.end;
    return this.final && this.model.count ? this.model.lastT : null;
  }

  // --- drawing ------------------------------------------------------------------------------
  requestDraw(chartsNow = false) {
    if (chartsNow) this.chartsAt = 0;
    if (!this.frame) this.frame = requestAnimationFrame(() => { this.frame = 0; this.draw(); });
  }

  paintState() {
    return { model: this.model, start: this.viewport.start, end: this.viewport.end, offset: this.offset,
      untimed: this.untimed, shown: this.ghost ? this.shown : null, cursor: this.cursor, cursorIndex: this.cursorIndex,
      hover: this.hover, selected: this.selected, colours: this.colours, endMs: this.endMs(), title: this.title };
  }

  height() { return timelineHeight(this.model.lanes.length); }

  draw() {
    this.viewport.refit();
    if (!this.wrap.clientWidth) return;
    const { ctx, width, height } = fitCanvas(this.canvas, this.height());
    paintTimeline(ctx, width, height, this.paintState());
    this.canvas.setAttribute("aria-label", `Timeline: ${this.model.count} events over ${fmtMs(this.model.lastT)} in ${this.model.lanes.length} lanes`);
    const since = performance.now() - this.chartsAt;
    if (since >= CHART_INTERVAL_MS) {
      this.drawCharts();
    } else if (!this.chartsTimer) {
      this.chartsTimer = setTimeout(() => { this.chartsTimer = 0; this.drawCharts(); }, CHART_INTERVAL_MS - since);
    }
    this.root.dataset.events = String(this.model.count);
  }

  stats() {
    if (this.statsVersion !== this.model.version) {
      this.cachedStats = gapStats(this.model.gaps);
      this.statsVersion = this.model.version;
    }
    return this.cachedStats;
  }

  chartColour() {
    return this.colours[this.model.familyIndex.get("text")] || theme().accent;
  }

  paintRate(ctx, width) {
    drawRateChart(ctx, { width, height: RATE_H, gutter: gutterFor(width), start: this.viewport.start + this.offset,
      end: this.viewport.end + this.offset, tokenTimes: this.model.tokens.a, count: this.model.tokens.n,
      colour: this.chartColour(), untimed: this.untimed });
  }

  paintGaps(ctx, width) {
    drawHistogram(ctx, { width, height: HIST_H, stats: this.untimed ? { count: 0, sorted: [] } : this.stats(), colour: this.chartColour() });
  }

  drawCharts() {
    this.chartsAt = performance.now();
    this.updateLegend();
    if (this.rateCanvas && this.rateCanvas.parentElement.clientWidth) {
      const { ctx, width } = fitCanvas(this.rateCanvas, RATE_H);
      this.paintRate(ctx, width);
    }
    if (this.gapCanvas && this.gapCanvas.parentElement.clientWidth) {
      const { ctx, width } = fitCanvas(this.gapCanvas, HIST_H);
      this.paintGaps(ctx, width);
    }
    if (this.gapStatsEl) {
      const stats = this.untimed ? { count: 0 } : this.stats();
      const values = { p50: stats.p50, p95: stats.p95, max: stats.max };
      for (const [key, value] of Object.entries(values)) {
        const node = this.gapStatsEl.querySelector(`[data-gap="${key}"]`);
        if (node) node.textContent = fmtMs(value ?? null);
      }
      const countNode = this.gapStatsEl.querySelector('[data-gap="count"]');
      if (countNode) countNode.textContent = String(stats.count || 0);
    }
  }

  updateLegend() {
    if (!this.legendEl) return;
    const byFamily = new Map();
    const cat = catalogueData();
    for (const [type, count] of this.model.counts) {
      const known = cat.types[type];
      const family = known ? known.family : type.startsWith("streamscope.") ? "streamscope" : "unknown";
      byFamily.set(family, (byFamily.get(family) || 0) + count);
    }
    const key = [...byFamily.keys()].join(",");
    if (key === this.legendKey) return;
    this.legendKey = key;
    const items = this.model.families.filter((f) => byFamily.has(f.name)).map((f) => {
      const item = document.createElement("span");
      item.className = "legend-item";
      const swatch = document.createElement("span");
      swatch.className = "legend-swatch";
      swatch.style.background = f.colour;
      item.append(swatch, document.createTextNode(f.label));
      return item;
    });
    this.legendEl.replaceChildren(...items);
  }

  // The whole panel as one picture (timeline, then the charts under it).
  paintPicture(ctx, width, withCharts = true, title = this.title) {
    const h = this.height();
    paintTimeline(ctx, width, h, { ...this.paintState(), hover: -1, title });
    if (!withCharts || !this.rateCanvas) return h;
    ctx.save();
    ctx.translate(0, h);
    this.paintRate(ctx, width);
    ctx.translate(0, RATE_H);
    this.paintGaps(ctx, Math.min(width, 520));
    ctx.restore();
    return h + RATE_H + HIST_H;
  }

  exportPicture(format) {
    const width = Math.max(640, this.wrap.clientWidth);
    const height = this.height() + (this.rateCanvas ? RATE_H + HIST_H : 0);
    exportPicture(format, width, height, (ctx) => this.paintPicture(ctx, width), `${this.filename}-timeline`);
  }

  // --- interaction --------------------------------------------------------------------------
  geometry() {
    const width = this.wrap.clientWidth;
    const gutter = gutterFor(width);
    const plotW = Math.max(10, width - gutter - 10);
    return { gutter, plotW, laneH: laneHeight(this.model.lanes.length), span: Math.max(this.viewport.end - this.viewport.start, 1e-6) };
  }

  xAt(px) {
    const { gutter, plotW, span } = this.geometry();
    return this.viewport.start + ((px - gutter) / plotW) * span;
  }

  hitTest(px, py) {
    const { gutter, plotW, laneH, span } = this.geometry();
    const lane = Math.floor((py - RULER) / laneH);
    if (lane < 0 || lane >= this.model.lanes.length || px < gutter - 4) return -1;
    const xOf = (i) => (this.untimed ? i : this.model.t.a[i]) - this.offset;
    const index = this.model.nearestInLane(lane, this.xAt(px), xOf);
    if (index < 0) return -1;
    const at = gutter + ((xOf(index) - this.viewport.start) / span) * plotW;
    return Math.abs(at - px) <= 6 ? index : -1;
  }

  bind() {
    const canvas = this.canvas;
    canvas.tabIndex = 0;
    let drag = null;
    const local = (e) => {
      const rect = canvas.getBoundingClientRect();
      return [e.clientX - rect.left, e.clientY - rect.top];
    };
    canvas.addEventListener("pointerdown", (e) => {
      const [px, py] = local(e);
      const scrub = this.onScrub && py < RULER;
      drag = { px, start: this.viewport.start, end: this.viewport.end, moved: false, scrub };
      canvas.setPointerCapture(e.pointerId);
      if (scrub) this.onScrub(this.toRunTime(this.xAt(px)));
    });
    canvas.addEventListener("pointermove", (e) => {
      const [px, py] = local(e);
      if (drag) {
        if (Math.abs(px - drag.px) > 3) drag.moved = true;
        if (drag.scrub) { this.onScrub(this.toRunTime(this.xAt(px))); return; }
        if (drag.moved) {
          const { plotW } = this.geometry();
          const delta = ((drag.px - px) / plotW) * (drag.end - drag.start);
          this.viewport.set(drag.start + delta, drag.end + delta);
          canvas.classList.add("panning");
          this.hideTip();
          return;
        }
      }
      const index = this.hitTest(px, py);
      if (index !== this.hover) {
        this.hover = index;
        this.requestDraw();
      }
      if (index >= 0) this.showTip(index, px, py); else this.hideTip();
    });
    canvas.addEventListener("pointerup", (e) => {
      const [px, py] = local(e);
      const wasDrag = drag;
      drag = null;
      canvas.classList.remove("panning");
      if (!wasDrag || wasDrag.moved || wasDrag.scrub) return;
      const index = this.hitTest(px, py);
      if (index >= 0) {
        this.selected = index;
        this.requestDraw();
        if (this.onPick) this.onPick(this.model.seq.a[index], index >= (this.shown ?? Infinity));
      } else if (this.onScrub && px >= this.geometry().gutter) {
        this.onScrub(this.toRunTime(this.xAt(px)));
      }
    });
    canvas.addEventListener("pointerleave", () => {
      if (this.hover !== -1) { this.hover = -1; this.requestDraw(); }
      this.hideTip();
    });
    canvas.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [px] = local(e);
      if (Math.abs(e.deltaX) > Math.abs(e.deltaY) || e.shiftKey) {
        const { plotW } = this.geometry();
        this.viewport.pan(((e.deltaX || e.deltaY) / plotW) * (this.viewport.end - this.viewport.start));
      } else {
        this.viewport.zoom(Math.exp(Math.max(-200, Math.min(200, e.deltaY)) * 0.002), this.xAt(px));
      }
    }, { passive: false });
    canvas.addEventListener("dblclick", () => this.viewport.reset());
    canvas.addEventListener("keydown", (e) => {
      const span = this.viewport.end - this.viewport.start;
      const actions = { "+": () => this.viewport.zoom(0.7), "=": () => this.viewport.zoom(0.7), "-": () => this.viewport.zoom(1 / 0.7),
        0: () => this.viewport.reset(), ArrowLeft: () => this.viewport.pan(-span * 0.1), ArrowRight: () => this.viewport.pan(span * 0.1) };
      if (actions[e.key]) { actions[e.key](); e.preventDefault(); }
    });
    for (const button of this.root.querySelectorAll("[data-zoom]")) {
      button.addEventListener("click", () => {
        const kind = button.dataset.zoom;
        if (kind === "in") this.viewport.zoom(0.6);
        else if (kind === "out") this.viewport.zoom(1 / 0.6);
        else this.viewport.reset();
      });
    }
    for (const button of this.root.querySelectorAll("[data-export]")) {
      button.addEventListener("click", () => this.exportPicture(button.dataset.export));
    }
  }

  // Axis units back to the run's own time (or event index when untimed).
  toRunTime(x) { return x + this.offset; }

  showTip(index, px, py) {
    const record = this.model.records[index];
    if (!record || !this.tip) return;
    const pending = this.ghost && index >= this.shown;
    fillTip(this.tip, record, this.untimed ? "untimed" : fmtMs(record.t, 1), pending);
    const wrapW = this.wrap.clientWidth;
    this.tip.style.left = `${Math.max(0, Math.min(px + 14, wrapW - this.tip.offsetWidth - 4))}px`;
    this.tip.style.top = `${py + 16}px`;
  }

  hideTip() { if (this.tip) this.tip.hidden = true; }
}

