// What the timeline draws, kept in typed arrays so 200,000 events stay cheap: each event's time,
// seq, family and lane (one lane per output item plus the response lifecycle lane), the markers
// (first event, response.created, first reasoning, first tool arguments, first token, end) and the
// token-delta times behind the rate chart and gap histogram.

import { catalogueData, familyOf, isDelta, isTerminalEvent } from "./catalogue.js";

// Which first-time an event sets (streams/protocol/metrics.py, docs/metrics.md).
const FIRST_OF_TYPE = {
  "response.created": "firstCreated",
  "response.output_text.delta": "firstText",
  "response.reasoning_text.delta": "firstReasoning",
  "response.reasoning_summary_text.delta": "firstReasoning",
  "response.function_call_arguments.delta": "firstArgs",
  "response.custom_tool_call_input.delta": "firstArgs",
  "response.mcp_call_arguments.delta": "firstArgs",
};

function chatFirst(data) {
  const delta = data && Array.isArray(data.choices) && data.choices[0] ? data.choices[0].delta : null;
  if (!delta || typeof delta !== "object") return null;
  if (typeof delta.content === "string" && delta.content) return "firstText";
  if (delta.reasoning_content || delta.reasoning) return "firstReasoning";
  if (Array.isArray(delta.tool_calls) && delta.tool_calls.some((c) => c && c.function && c.function.arguments)) return "firstArgs";
  return null;
}

const ITEM_LABELS = {
  message: "message", reasoning: "reasoning", function_call: "function call", custom_tool_call: "custom tool",
  web_search_call: "web search", file_search_call: "file search", code_interpreter_call: "code interpreter",
  image_generation_call: "image generation", mcp_call: "MCP call", mcp_list_tools: "MCP tools",
  mcp_approval_request: "MCP approval", shell_call: "shell", shell_call_output: "shell output",
  local_shell_call: "local shell", apply_patch_call: "apply patch", compaction: "compaction", audio: "audio",
  computer_call: "computer",
};

export function itemLabel(type) {
  if (!type) return "item";
  return ITEM_LABELS[type] || type.replace(/_call$/, "").replace(/_/g, " ");
}

class GrowArray {
  constructor(Kind, capacity = 1024) { this.Kind = Kind; this.a = new Kind(capacity); this.n = 0; }
  push(value) {
    if (this.n === this.a.length) {
      const bigger = new this.Kind(this.a.length * 2);
      bigger.set(this.a);
      this.a = bigger;
    }
    this.a[this.n++] = value;
  }
}

export class TimelineModel {
  constructor() {
    const cat = catalogueData();
    this.families = cat.families.length ? cat.families : [{ name: "unknown", label: "Unknown", colour: "dimgray" }];
    this.familyIndex = new Map(this.families.map((f, i) => [f.name, i]));
    this.reset();
  }

  reset() {
    this.t = new GrowArray(Float64Array);
    this.seq = new GrowArray(Int32Array);
    this.fam = new GrowArray(Uint8Array);
    this.lane = new GrowArray(Uint16Array);
    this.records = [];
    this.tokens = new GrowArray(Float64Array); // token-delta times, in arrival order
    this.gaps = [];
    this.lanes = [{ key: "response", label: "lifecycle", itemType: null, events: new GrowArray(Int32Array) }];
    this.laneByKey = new Map([["response", 0]]);
    this.keyById = new Map();
    this.counts = new Map();
    this.firstEvent = null;
    this.firstToken = null; // first delta of any kind (ttfd_ms): the token rate's start
    // The first-times of docs/metrics.md: response.created, output text (ttft_ms), reasoning, tool arguments.
    this.firstCreated = null;
    this.firstText = null;
    this.firstReasoning = null;
    this.firstArgs = null;
    this.end = null;
    this.lastT = 0;
    this.usageTokens = null;
    this.version = (this.version || 0) + 1;
  }

  get count() { return this.t.n; }
  timeOf(i) { return this.t.a[i]; }

  laneFor(record) {
    const d = record.data && typeof record.data === "object" ? record.data : {};
    const type = record.type;
    let key = null;
    let itemType = null;
    if (type === "chat.completion.chunk") {
      const choice = Array.isArray(d.choices) && d.choices[0];
      if (choice && !(d.usage && !d.choices.length)) { key = `o${choice.index || 0}`; itemType = "message"; }
    } else if (Number.isInteger(d.output_index)) {
      key = `o${d.output_index}`;
      if (d.item_id) this.keyById.set(d.item_id, key);
      if (d.item && d.item.id) this.keyById.set(d.item.id, key);
    } else if (d.item_id) {
      key = this.keyById.get(d.item_id) || `i${d.item_id}`;
    }
    if (key === null) return 0;
    if (d.item && typeof d.item.type === "string") itemType = d.item.type;
    const known = catalogueData().types[type];
    if (!itemType && known && known.item_type) itemType = known.item_type;
    let lane = this.laneByKey.get(key);
    if (lane === undefined) {
      lane = this.lanes.length;
      this.lanes.push({ key, label: itemLabel(itemType), itemType, index: key.startsWith("o") ? Number(key.slice(1)) : null,
        events: new GrowArray(Int32Array) });
      this.laneByKey.set(key, lane);
      this.sortLanes();
      lane = this.laneByKey.get(key);
    } else if (itemType && !this.lanes[lane].itemType) {
      this.lanes[lane].itemType = itemType;
      this.lanes[lane].label = itemLabel(itemType);
    }
    return lane;
  }

  // Lanes in output order (lifecycle first); the per-event lane numbers follow the new order.
  sortLanes() {
    const order = this.lanes.map((lane, i) => [lane, i]);
    order.sort(([a, ia], [b, ib]) => (ia === 0 ? -1 : ib === 0 ? 1 : (a.index ?? 1e9) - (b.index ?? 1e9) || ia - ib));
    if (order.every(([, i], pos) => i === pos)) return;
    const remap = new Uint16Array(this.lanes.length);
    order.forEach(([, old], pos) => { remap[old] = pos; });
    this.lanes = order.map(([lane]) => lane);
    this.laneByKey = new Map(this.lanes.map((lane, i) => [lane.key, i]));
    for (let i = 0; i < this.lane.n; i++) this.lane.a[i] = remap[this.lane.a[i]];
  }

  append(records) {
    for (const record of records) {
      const i = this.t.n;
      const t = typeof record.t === "number" ? record.t : 0;
      const family = this.familyIndex.get(familyOf(record.type));
      const lane = this.laneFor(record);
      this.t.push(t);
      this.seq.push(record.seq);
      this.fam.push(family === undefined ? this.familyIndex.get("unknown") ?? 0 : family);
      this.lane.push(lane);
      this.lanes[lane].events.push(i);
      this.records.push(record);
      this.counts.set(record.type, (this.counts.get(record.type) || 0) + 1);
      if (this.firstEvent === null) this.firstEvent = t;
      if (t > this.lastT) this.lastT = t;
      // A chat chunk carrying text, reasoning or tool arguments is that protocol's delta (docs/metrics.md).
      const chatDelta = record.type === "chat.completion.chunk" ? chatFirst(record.data) : null;
      const first = FIRST_OF_TYPE[record.type] || chatDelta;
      if (first && this[first] === null) this[first] = t;
      if (isDelta(record.type) || chatDelta) {
        if (this.firstToken === null) this.firstToken = t;
        else this.gaps.push(t - this.tokens.a[this.tokens.n - 1]);
        this.tokens.push(t);
      }
      if (isTerminalEvent(record.type)) {
        this.end = t;
        const usage = record.data && record.data.response && record.data.response.usage;
        if (usage && Number.isInteger(usage.output_tokens)) this.usageTokens = usage.output_tokens;
      }
    }
    this.version += 1;
  }

  // The lane's event list is in seq order; return the one nearest to x (in the same units).
  nearestInLane(lane, x, xOf) {
    const events = this.lanes[lane] && this.lanes[lane].events;
    if (!events || !events.n) return -1;
    let lo = 0;
    let hi = events.n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (xOf(events.a[mid]) < x) lo = mid + 1; else hi = mid;
    }
    let best = events.a[lo];
    if (lo > 0 && Math.abs(xOf(events.a[lo - 1]) - x) <= Math.abs(xOf(best) - x)) best = events.a[lo - 1];
    return best;
  }

  // Cumulative output tokens: [[t, tokens so far], ...], scaled to usage when the run reported it.
  cumulativeTokens(maxPoints = 400) {
    const n = this.tokens.n;
    if (!n) return [[0, 0]];
    const scale = this.usageTokens ? this.usageTokens / n : 1;
    const points = [[0, 0], [this.tokens.a[0], 0]];
    const stride = Math.max(1, Math.ceil(n / Math.max(2, maxPoints - 2)));
    for (let i = stride - 1; i < n; i += stride) points.push([this.tokens.a[i], (i + 1) * scale]);
    if ((n - 1) % stride !== stride - 1 || n < stride) points.push([this.tokens.a[n - 1], n * scale]);
    return points;
  }
}
