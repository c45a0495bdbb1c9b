// Rebuilding a response's output items from its events, in the browser, as they arrive.
// Same rules as streams/protocol/rebuild.py (and chat_chunks.py), driven by the same catalogue
// (the server embeds it as JSON; catalogue.js reads it): items are addressed by output_index (or
// item_id), deltas append, a full value (*.done, content_part.done, output_item.done) wins, the
// terminal response only fills items the stream never showed. Chat Completions chunks are folded
// in by chat_chunks.js. Renderers (render.js) draw each item type its own way.
// A non-streamed answer (the gateway's one streamscope.response_body event) is read as the stream
// of the same answer would be: a Response as its terminal event, a chat.completion as one chunk.
// Besides output items the model keeps run-level "pseudo items" the page shows in the same
// flow: malformed lines, response-level audio and the outcome (incomplete / failed).

import { catalogueData } from "./catalogue.js";
import { applyChat } from "./chat_chunks.js";
import { index, isObject, str } from "./values.js";

const TERMINAL_STATUS = { "response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed" };
// A Response body's status -> the terminal event a stream of it ends with; queued / in_progress (a
// background request's answer) and cancelled have none: the body is only a snapshot.
const BODY_TERMINALS = new Map(Object.entries(TERMINAL_STATUS).map(([type, status]) => [status, type]));
// A non-streamed answer stored whole: the JSON body as received, or {raw, error} when it was not an object.
export const RESPONSE_BODY = "streamscope.response_body";
const PART_TYPES = { text: "output_text", refusal: "refusal", reasoning_text: "reasoning_text" };
const STRING_FIELDS = new Set(["arguments", "input", "code", "diff"]);

// A delta's text: a string, or (older SDKs' reasoning deltas) an object with `text`.
const deltaText = (value) => (typeof value === "string" ? value : isObject(value) && typeof value.text === "string" ? value.text : null);

function newPart(source, fallbackType) {
  const type = (isObject(source) && str(source.type)) || fallbackType;
  const part = { type, text: "", annotations: [], logprobs: [] };
  if (isObject(source)) {
    const value = type === "refusal" ? source.refusal : source.text;
    if (typeof value === "string") part.text = value;
    if (Array.isArray(source.annotations)) part.annotations = source.annotations.slice();
    if (Array.isArray(source.logprobs)) part.logprobs = source.logprobs.slice();
  }
  return part;
}

/** A chat.completion as the one chat.completion.chunk that streams it whole (streams/protocol/rebuild.py's twin). */
export function chunkOfCompletion(body) {
  const choices = Array.isArray(body.choices) ? body.choices.filter(isObject) : [];
  return {
    object: "chat.completion.chunk", id: body.id, model: body.model, usage: body.usage,
    choices: choices.map((choice) => ({ index: choice.index, delta: choice.message, logprobs: choice.logprobs, finish_reason: choice.finish_reason })),
  };
}

export class OutputModel {
  constructor({ catalogue = null } = {}) {
    this.catalogue = catalogue || catalogueData();
    this.items = new Map(); // key -> item (output items and pseudo items)
    this.order = []; // keys in display order
    this.dirty = new Set();
    this.byId = new Map(); // item id -> output_index
    this.errors = [];
    this.response = null; // the latest response snapshot
    this.terminal = null; // the terminal event's type
    this.status = null; // completed / incomplete / failed once a terminal event (or chat finish) arrived
    this.unknown = new Map(); // unknown event type -> count
    this.malformed = [];
    this.doneMarker = false;
    this.notes = [];
    this.chat = null;
  }

  kind(type) {
    const known = this.catalogue.types && this.catalogue.types[type];
    if (known) return known;
    if (type.startsWith("streamscope.")) return { family: "streamscope", phase: "marker" };
    return null;
  }

  // -- items -------------------------------------------------------------------------------

  add(key, sort, item) {
    item.key = key;
    item.sort = sort;
    this.items.set(key, item);
    this.order.push(key);
    this.order.sort((a, b) => this.items.get(a).sort - this.items.get(b).sort);
    this.dirty.add(key);
    return item;
  }

  touch(key) {
    this.dirty.add(key);
    return this.items.get(key);
  }

  outputItem(position, data, type) {
    const key = `o${position}`;
    if (this.items.has(key)) return this.touch(key);
    return this.add(key, position, {
      index: position, type: type || "unknown", id: null, status: null, phase: null, phases: [], done: false,
      data: {}, content: [], summary: [], commands: [], outputs: [], partial: null, partials: 0,
    });
  }

  pseudo(key, sort, fields) {
    if (this.items.has(key)) return this.touch(key);
    return this.add(key, sort, { index: null, phases: [], content: [], summary: [], data: {}, ...fields });
  }

  lastIndex() {
    let last = -1;
    for (const item of this.items.values()) if (item.index !== null && item.index > last) last = item.index;
    return last;
  }

  // -- feeding -----------------------------------------------------------------------------

  apply(record) {
    const type = record.type;
    const d = record.data;
    const kind = this.kind(type);
    if (!kind) {
      this.unknown.set(type, (this.unknown.get(type) || 0) + 1);
      return;
    }
    if (kind.family === "streamscope") {
      if (type === "streamscope.done") this.doneMarker = true;
      if (type === "streamscope.malformed") this.addMalformed(record.seq, isObject(d) ? d : { raw: String(d) }, "data");
      if (type === RESPONSE_BODY) this.applyBody(record.seq, d);
      return;
    }
    if (!isObject(d)) return;
    switch (kind.phase) {
      case "chunk": return applyChat(this, d);
      case "error": return this.applyError(d);
      case "lifecycle": if (isObject(d.response)) this.response = d.response; return;
      case "terminal": return this.applyTerminal(type, d);
      default: return this.applyItemEvent(type, kind, d);
    }
  }

  addMalformed(seq, info, where) {
    this.malformed.push({ seq, raw: String(info.raw ?? ""), error: info.error || "", where: info.where || where });
    this.pseudo("!malformed", -1, { type: "malformed" }).lines = this.malformed;
  }

  // A whole answer: its items as if each arrived by output_item.done, then its terminal event (a
  // Response), or one chunk holding the whole message (a chat.completion).
  applyBody(seq, body) {
    if (!isObject(body)) return;
    if (body.object === "chat.completion") return applyChat(this, chunkOfCompletion(body));
    if (body.object !== "response" && !Array.isArray(body.output)) {
      if (typeof body.raw === "string") this.addMalformed(seq, body, "body");
      return;
    }
    (Array.isArray(body.output) ? body.output : []).forEach((final, position) => {
      if (!isObject(final) || this.items.has(`o${position}`)) return;
      if (typeof final.id === "string") this.byId.set(final.id, position);
      this.finish(this.outputItem(position, final, final.type), final);
    });
    const terminal = typeof body.status === "string" ? BODY_TERMINALS.get(body.status) : undefined;
    if (terminal) return this.applyTerminal(terminal, { response: body });
    this.response = body;
    this.outcome();
  }

  applyError(d) {
    const nested = d.error;
    // The API nests the details under "error"; the spec and SDK document them flat.
    const source = isObject(nested) ? nested : typeof nested === "string" ? { message: nested } : d;
    this.errors.push({
      message: str(source.message) || "An error occurred during streaming",
      code: str(source.code) || (isObject(nested) ? str(nested.type) : null),
      param: str(source.param),
      source: "error",
    });
    this.outcome();
  }

  applyTerminal(type, d) {
    const response = isObject(d.response) ? d.response : {};
    this.response = response;
    this.terminal = type;
    this.status = TERMINAL_STATUS[type];
    if (this.status === "failed" && !this.errors.length) {
      const error = isObject(response.error) ? response.error : {};
      this.errors.push({ message: str(error.message) || "the response failed", code: str(error.code), source: type });
    }
    // Items only the terminal response shows are adopted; streamed ones stay as streamed.
    (Array.isArray(response.output) ? response.output : []).forEach((final, position) => {
      if (!isObject(final) || this.items.has(`o${position}`)) return;
      this.notes.push(`output[${position}] taken from the terminal response`);
      this.finish(this.outputItem(position, final, final.type), final);
    });
    this.outcome();
  }

  outcome() {
    const item = this.pseudo("~outcome", Infinity, { type: "outcome" });
    item.status = this.status;
    item.errors = this.errors;
    item.response = this.response;
    item.terminal = this.terminal;
    item.done = true;
  }

  applyItemEvent(type, kind, d) {
    if (kind.field === "item") return this.applyOutputItem(kind, d);
    if (kind.family === "audio") return this.applyAudio(kind, d);
    const item = this.locate(type, kind, d);
    if (!item) return;
    const field = kind.field;
    if (kind.phase === "progress") {
      const phase = type.slice(type.lastIndexOf(".") + 1);
      item.phase = phase;
      if (item.phases[item.phases.length - 1] !== phase) item.phases.push(phase);
    } else if (field in PART_TYPES || field === "part") {
      this.applyContent(item, kind, d);
    } else if (field === "summary_text" || field === "summary_part") {
      this.applySummary(item, kind, d);
    } else if (field === "annotation") {
      const part = this.part(item.content, index(d.content_index) || 0, "output_text");
      const at = index(d.annotation_index);
      part.annotations[at !== null ? at : part.annotations.length] = d.annotation;
    } else if (STRING_FIELDS.has(field)) {
      if (kind.phase === "delta") {
        const delta = deltaText(d.delta);
        if (delta !== null) item[field] = (item[field] || "") + delta;
      } else if (typeof d[field] === "string") {
        item[field] = d[field];
      }
    } else if (field === "command") {
      const at = index(d.command_index) || 0;
      if (kind.phase === "delta") {
        const delta = deltaText(d.delta);
        if (delta !== null) item.commands[at] = (item.commands[at] || "") + delta;
      } else if (typeof d.command === "string") {
        item.commands[at] = d.command;
      }
    } else if (field === "output") {
      this.applyShellOutput(item, kind, d);
    } else if (field === "partial_image") {
      if (typeof d.partial_image_b64 === "string") {
        item.partial = { b64: d.partial_image_b64, index: index(d.partial_image_index), format: str(d.output_format), size: str(d.size) };
        item.partials += 1;
      }
    }
  }

  locate(type, kind, d) {
    let position = index(d.output_index);
    const itemId = str(d.item_id);
    if (position === null && itemId !== null) position = this.byId.has(itemId) ? this.byId.get(itemId) : null;
    if (position === null) {
      this.notes.push(`${type} names no known output_index / item_id`);
      return null;
    }
    if (this.items.has(`o${position}`)) return this.touch(`o${position}`);
    let itemType = kind.item_type || "unknown";
    if (isObject(d.part) && d.part.type === "reasoning_text") itemType = "reasoning";
    const item = this.outputItem(position, null, itemType);
    if (itemId !== null) {
      item.id = itemId;
      this.byId.set(itemId, position);
    }
    return item;
  }

  applyOutputItem(kind, d) {
    const data = d.item;
    if (!isObject(data)) return;
    let position = index(d.output_index);
    if (position === null) position = this.byId.has(data.id) ? this.byId.get(data.id) : this.lastIndex() + 1;
    const item = this.outputItem(position, data, data.type);
    if (typeof data.id === "string") this.byId.set(data.id, position);
    if (kind.phase === "added") {
      item.type = str(data.type) || item.type;
      item.id = str(data.id) || item.id;
      item.status = str(data.status) || item.status;
      item.data = data;
      // Parts the stream already built (events before their item was added) are kept.
      (Array.isArray(data.content) ? data.content : []).forEach((part, i) => { if (!item.content[i]) item.content[i] = newPart(part, "output_text"); });
      (Array.isArray(data.summary) ? data.summary : []).forEach((part, i) => { if (!item.summary[i]) item.summary[i] = newPart(part, "summary_text"); });
      for (const field of ["arguments", "input", "code"]) if (typeof data[field] === "string" && !item[field]) item[field] = data[field];
      return;
    }
    this.finish(item, data);
  }

  // output_item.done (or the terminal response) carries the whole item: it wins.
  finish(item, data) {
    item.done = true;
    item.data = data;
    item.type = str(data.type) || item.type;
    item.id = str(data.id) || item.id;
    // Some item types carry no status (mcp_list_tools, compaction): their last phase says it.
    item.status = str(data.status) || (item.phase === "failed" || data.error ? "failed" : "completed");
    if (Array.isArray(data.content)) {
      item.content = data.content.map((part, i) => {
        const fresh = newPart(part, "output_text");
        const old = item.content[i];
        if (old && !fresh.logprobs.length && old.logprobs.length) fresh.logprobs = old.logprobs;
        return fresh;
      });
    }
    if (Array.isArray(data.summary)) item.summary = data.summary.map((part) => newPart(part, "summary_text"));
    for (const field of ["arguments", "input", "code"]) if (typeof data[field] === "string") item[field] = data[field];
    if (isObject(data.operation) && typeof data.operation.diff === "string") item.diff = data.operation.diff;
    if (isObject(data.action) && Array.isArray(data.action.commands)) item.commands = data.action.commands.map(String);
    if (item.type === "shell_call_output" && Array.isArray(data.output)) item.outputs = data.output.map((entry) => ({ ...entry }));
    if (item.type === "shell_call_output") this.linkShell(item);
  }

  part(parts, position, fallbackType) {
    if (!parts[position]) parts[position] = newPart(null, fallbackType);
    return parts[position];
  }

  applyContent(item, kind, d) {
    const position = index(d.content_index) || 0;
    if (kind.field === "part") {
      if (!isObject(d.part)) return;
      const old = item.content[position];
      const fresh = newPart(d.part, "output_text");
      if (kind.phase === "added") {
        if (old && old.text && !fresh.text) fresh.text = old.text; // deltas came before the part
      } else if (old) {
        if (!fresh.logprobs.length) fresh.logprobs = old.logprobs;
        if (!Array.isArray(d.part.annotations)) fresh.annotations = old.annotations;
      }
      item.content[position] = fresh;
      return;
    }
    const part = this.part(item.content, position, PART_TYPES[kind.field]);
    if (kind.phase === "delta") {
      const delta = deltaText(d.delta);
      if (delta !== null) part.text += delta;
      if (Array.isArray(d.logprobs) && d.logprobs.length) for (const entry of d.logprobs) part.logprobs.push(entry);
    } else {
      const value = d[kind.field === "refusal" ? "refusal" : "text"];
      if (typeof value === "string") part.text = value;
      if (Array.isArray(d.logprobs) && d.logprobs.length) part.logprobs = d.logprobs.slice();
    }
  }

  applySummary(item, kind, d) {
    const position = index(d.summary_index) || 0;
    if (kind.field === "summary_part") {
      if (!isObject(d.part)) return;
      const old = item.summary[position];
      if (!old || kind.phase === "done" || !old.text) item.summary[position] = newPart(d.part, "summary_text");
      return;
    }
    const part = this.part(item.summary, position, "summary_text");
    if (kind.phase === "delta") {
      const delta = deltaText(d.delta);
      if (delta !== null) part.text += delta;
    } else if (typeof d.text === "string") {
      part.text = d.text;
    }
  }

  applyShellOutput(item, kind, d) {
    const at = index(d.command_index) || 0;
    if (kind.phase === "delta") {
      const entry = (item.outputs[at] ||= { stdout: "", stderr: "" });
      if (isObject(d.delta)) {
        for (const stream of ["stdout", "stderr"]) if (typeof d.delta[stream] === "string") entry[stream] = (entry[stream] || "") + d.delta[stream];
      }
    } else if (Array.isArray(d.output)) {
      // One entry: the final output of this command. Several: the whole list.
      const targets = d.output.length === 1 ? [[at, d.output[0]]] : d.output.map((entry, i) => [i, entry]);
      for (const [target, final] of targets) if (isObject(final)) item.outputs[target] = { ...final };
    }
    this.linkShell(item);
  }

  // A shell_call_output shows the commands of the shell_call with the same call_id.
  linkShell(item) {
    const callId = item.data && item.data.call_id;
    if (!callId) return;
    for (const other of this.items.values()) {
      if (other.type === "shell_call" && other.data && other.data.call_id === callId) item.callCommands = other.commands;
    }
  }

  applyAudio(kind, d) {
    const item = this.pseudo("~audio", this.lastIndex() + 0.5, { type: "audio", transcript: "", chunks: 0, bytes: 0, pieces: [], done: false, audioDone: false, transcriptDone: false });
    const delta = typeof d.delta === "string" ? d.delta : null;
    if (kind.field === "transcript") {
      if (kind.phase === "delta" && delta !== null) item.transcript += delta;
      else if (kind.phase === "done") item.transcriptDone = true;
    } else if (kind.phase === "delta" && delta !== null) {
      item.chunks += 1;
      item.bytes += Math.floor((delta.length * 3) / 4) - (delta.endsWith("==") ? 2 : delta.endsWith("=") ? 1 : 0);
      item.pieces.push(delta);
    } else if (kind.phase === "done") {
      item.audioDone = true;
    }
    item.done = item.audioDone && item.transcriptDone;
  }

  // -- reading -----------------------------------------------------------------------------

  takeDirty() {
    const keys = [...this.dirty];
    this.dirty.clear();
    return keys;
  }

  /** Like the SDK's Response.output_text: every message's output_text parts, in order. */
  outputText() {
    let text = "";
    for (const key of this.order) {
      const item = this.items.get(key);
      if (item.type !== "message") continue;
      for (const part of item.content) if (part && part.type === "output_text") text += part.text;
    }
    return text;
  }
}
