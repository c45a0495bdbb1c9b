// The run view shared by the playground, the run page (and later replay and compare):
// feed it event records and status frames; it renders once per animation frame.

import { EventList } from "./eventlist.js";
import { FlagPanel } from "./flags.js";
import { isDelta } from "./catalogue.js";
import { fmtMs } from "./format.js";
import { OutputModel } from "./output_model.js";
import { renderItem } from "./render.js";
import { isTerminalStatus } from "./run_status.js";
import { TimelinePanel } from "./timeline.js";

// Which first-time a Responses event type sets (streams/protocol/metrics.py, docs/metrics.md).
const FIRST_OF_TYPE = {
  "response.output_text.delta": "ttft",
  "response.reasoning_text.delta": "ttfr",
  "response.reasoning_summary_text.delta": "ttfr",
  "response.function_call_arguments.delta": "ttfa",
  "response.custom_tool_call_input.delta": "ttfa",
  "response.mcp_call_arguments.delta": "ttfa",
};

// The metric cards: whole milliseconds up to 10 s ("1234 ms"), then seconds.
const cardMs = (value) => fmtMs(value, 0, 10000);

export class RunView {
  // options.timeline: a TimelinePanel living outside root (compare); otherwise root's
  // [data-timeline] panel, if any, is built here. Views without an event list (compare) work too.
  constructor(root, options = {}) {
    this.root = root;
    this.statusEl = root.querySelector("[data-status]");
    this.errorEl = root.querySelector("[data-error]");
    this.outputEl = root.querySelector("[data-output]");
    this.connEl = root.querySelector("[data-conn]");
    this.countEl = root.querySelector("[data-event-count]");
    this.rawEl = root.querySelector("[data-raw]");
    this.rawTitle = root.querySelector("[data-raw-title]");
    this.metricEls = {};
    for (const node of root.querySelectorAll("[data-metric]")) this.metricEls[node.dataset.metric] = node;
    const listEl = root.querySelector("[data-event-list]");
    this.list = listEl ? new EventList(listEl, { onSelect: (e) => this.showRaw(e) }) : null;
    const timelineEl = root.querySelector("[data-timeline]");
    this.timeline = options.timeline || (timelineEl ? new TimelinePanel(timelineEl, {
      filename: options.filename || "run", onPick: (seq) => this.list && this.list.selectSeq(seq),
    }) : null);
    this.reset();
  }

  reset() {
    this.pending = [];
    this.model = new OutputModel();
    this.itemNodes = new Map();
    this.outputEl.replaceChildren();
    const hint = document.createElement("p");
    hint.className = "muted placeholder";
    hint.textContent = "The streamed output appears here.";
    this.outputEl.append(hint);
    if (this.flags) this.flags.clear();
    if (this.list) this.list.clear();
    if (this.timeline) this.timeline.reset();
    // Firsts as docs/metrics.md defines them; the stored metrics replace them at the run's end.
    this.live = { ttfe: null, ttft: null, ttfc: null, ttfr: null, ttfa: null, firstDelta: null,
      events: 0, deltas: 0, lastDelta: null, last: null };
    this.finalMetrics = null;
    this.frame = 0;
    if (this.rawEl) this.rawEl.textContent = "";
    if (this.rawTitle) this.rawTitle.textContent = "Click an event to see its raw JSON";
    this.setError(null);
    this.setStatus("idle");
    this.renderMetrics();
  }

  addEvents(events) {
    for (const e of events) this.pending.push(e);
    if (!this.frame) this.frame = requestAnimationFrame(() => this.flush());
  }

  flush() {
    this.frame = 0;
    const batch = this.pending;
    this.pending = [];
    if (!batch.length) return;
    const live = this.live;
    for (const e of batch) {
      this.model.apply(e);
      live.events += 1;
      if (live.ttfe === null) live.ttfe = e.t;
      live.last = e.t;
      if (live.ttfc === null && e.type === "response.created") live.ttfc = e.t;
      const first = FIRST_OF_TYPE[e.type];
      if (first && live[first] === null) live[first] = e.t;
      if (isDelta(e.type)) {
        live.deltas += 1;
        if (live.firstDelta === null) live.firstDelta = e.t;
        if (live.ttft === null && e.type === "chat.completion.chunk") live.ttft = e.t;
        live.lastDelta = e.t;
      }
    }
    if (this.list) this.list.append(batch);
    if (this.timeline) this.timeline.append(batch);
    this.renderOutput();
    this.renderMetrics();
    if (this.model.errors.length) {
      const last = this.model.errors[this.model.errors.length - 1];
      this.setError({ message: last.message, code: last.code });
    }
  }

  renderOutput() {
    const dirty = this.model.takeDirty();
    if (!dirty.length) return;
    const placeholder = this.outputEl.querySelector(".placeholder");
    if (placeholder) placeholder.remove();
    for (const key of dirty) {
      let node = this.itemNodes.get(key);
      if (!node) {
        node = document.createElement("article");
        this.itemNodes.set(key, node);
      }
      renderItem(this.model.items.get(key), node);
    }
    // Keep DOM order equal to output order (items can arrive interleaved).
    this.model.order.forEach((key) => {
      const node = this.itemNodes.get(key);
      if (node && node !== this.outputEl.children[this.model.order.indexOf(key)]) this.outputEl.append(node);
    });
    if (this.flags) this.flags.highlight(); // re-rendered items lose their marks
    if (this.model.unknown.size) {
      let note = this.outputEl.querySelector(".unknown-types");
      if (!note) {
        note = document.createElement("p");
        note.className = "unknown-types muted";
      }
      note.textContent = `Kept ${[...this.model.unknown.values()].reduce((a, b) => a + b, 0)} events of types Streamscope does not know: ${[...this.model.unknown.keys()].join(", ")}`;
      this.outputEl.append(note);
    }
  }

  // A moderation flag (RunSocket's onFlag): shown above the output, its span marked in it.
  addFlag(flag) {
    if (!this.flags) this.flags = new FlagPanel(this);
    this.flags.add(flag);
  }

  renderMetrics() {
    const live = this.live;
    const final = this.finalMetrics;
    let tokensPerS = null;
    if (live.deltas > 1 && live.lastDelta > live.firstDelta) tokensPerS = live.deltas / ((live.lastDelta - live.firstDelta) / 1000);
    const values = {
      ttfb_ms: cardMs(final ? final.ttfb_ms : live.ttfe),
      ttfe_ms: cardMs(final ? final.ttfe_ms : live.ttfe),
      ttfc_ms: cardMs(final ? final.ttfc_ms : live.ttfc),
      ttfr_ms: cardMs(final ? final.ttfr_ms : live.ttfr),
      ttfa_ms: cardMs(final ? final.ttfa_ms : live.ttfa),
      ttft_ms: cardMs(final ? final.ttft_ms : live.ttft),
      events: String(final && final.events !== undefined ? final.events : live.events),
      tokens_per_s: (final ? final.tokens_per_s : tokensPerS) ? (final ? final.tokens_per_s : tokensPerS).toFixed(1) : "–",
      duration_ms: cardMs(final ? final.duration_ms : live.last),
    };
    for (const [key, text] of Object.entries(values)) if (this.metricEls[key]) this.metricEls[key].textContent = text;
    if (this.countEl) this.countEl.textContent = `(${live.events})`;
  }

  setStatus(status, metrics = null, error = null) {
    this.status = status;
    this.statusEl.textContent = status;
    this.statusEl.className = `status-badge status-${status}`;
    if (metrics && isTerminalStatus(status) && Object.keys(metrics).length) this.finalMetrics = metrics;
    if (error) this.setError(error);
    this.renderMetrics();
    this.root.dataset.state = status;
    if (this.timeline) this.timeline.setFinal(isTerminalStatus(status));
  }

  setError(error) {
    if (!error) {
      this.errorEl.hidden = true;
      this.errorEl.textContent = "";
      return;
    }
    this.errorEl.hidden = false;
    const parts = [error.message || "error"];
    if (error.code) parts.push(`(${error.code})`);
    if (error.http_status) parts.unshift(`HTTP ${error.http_status}:`);
    this.errorEl.textContent = parts.join(" ");
    if (error.body) {
      const pre = document.createElement("pre");
      pre.textContent = typeof error.body === "string" ? error.body : JSON.stringify(error.body, null, 2);
      this.errorEl.append(pre);
    }
  }

  setConnection(state) {
    if (!this.connEl) return;
    const labels = { connecting: "connecting…", reconnecting: "reconnecting…", live: "live", refused: "access refused", done: "" };
    this.connEl.textContent = labels[state] ?? state;
    this.connEl.hidden = !this.connEl.textContent;
    this.connEl.className = `conn conn-${state}`;
  }

  isTerminal() {
    return isTerminalStatus(this.status);
  }

  showRaw(e) {
    if (this.timeline) this.timeline.highlight(e.seq);
    if (!this.rawEl) return;
    this.rawTitle.textContent = `#${e.seq} · ${e.t.toFixed(1)} ms · ${e.type}`;
    this.rawEl.textContent = JSON.stringify(e.data, null, 2);
  }
}
