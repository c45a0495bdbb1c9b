// Rebuilding a response's output items from its events, in the browser, as they arrive.
// The same accumulation rules as streams/rebuild.py; renderers draw each item type its own way.
// Everything model-produced is put in the page with textContent, never as HTML.

const TERMINAL = new Set(["response.completed", "response.incomplete", "response.failed"]);

export class OutputModel {
  constructor() {
    this.items = new Map(); // key -> item
    this.order = [];
    this.dirty = new Set();
    this.errors = [];
    this.response = null;
    this.terminal = null;
    this.unknown = new Map();
    this.malformed = 0;
  }

  key(data) {
    if (Number.isInteger(data.output_index)) return `o${data.output_index}`;
    if (data.item_id) return `i${data.item_id}`;
    return "o0";
  }

  item(data, fallbackType = "unknown") {
    const k = this.key(data);
    let item = this.items.get(k);
    if (!item) {
      item = { type: fallbackType, id: data.item_id || null, status: "in_progress", content: [], summary: [] };
      this.items.set(k, item);
      this.order.push(k);
      this.order.sort(orderKeys);
    }
    this.dirty.add(k);
    return item;
  }

  part(item, index, type) {
    if (!item.content[index]) item.content[index] = { type, text: "", annotations: [] };
    return item.content[index];
  }

  apply(record) {
    const type = record.type;
    const d = record.data;
    if (type.startsWith("streamscope.")) {
      if (type === "streamscope.malformed") this.malformed += 1;
      return;
    }
    if (!d || typeof d !== "object") return;
    if (type === "chat.completion.chunk") return this.applyChat(d);
    if (type === "error") {
      const detail = d.error && typeof d.error === "object" ? d.error : d;
      this.errors.push({ message: detail.message || "error", code: detail.code || detail.type || null });
      return;
    }
    if (d.response && typeof d.response === "object" && type.startsWith("response.") && !type.includes(".", 9)) {
      this.response = d.response;
      if (TERMINAL.has(type)) {
        this.terminal = type;
        // The terminal response carries the final items: let them settle anything left open.
        (d.response.output || []).forEach((final, index) => {
          const item = this.item({ output_index: index }, final.type);
          mergeFinal(item, final);
        });
      }
      return;
    }
    const s = type.slice("response.".length);
    if (s === "output_item.added" || s === "output_item.done") {
      const item = this.item(d, d.item && d.item.type);
      if (d.item) mergeFinal(item, d.item, s === "output_item.added");
      return;
    }
    if (s === "content_part.added" || s === "content_part.done") {
      const item = this.item(d, "message");
      const part = this.part(item, d.content_index || 0, d.part && d.part.type);
      if (d.part) {
        part.type = d.part.type || part.type;
        if (s === "content_part.done") Object.assign(part, d.part, { annotations: d.part.annotations || part.annotations });
      }
      return;
    }
    const item = this.item(d, guessItemType(s));
    switch (s) {
      case "output_text.delta": this.part(item, d.content_index || 0, "output_text").text += d.delta || ""; break;
      case "output_text.done": this.part(item, d.content_index || 0, "output_text").text = d.text ?? ""; break;
      case "output_text.annotation.added":
      case "output_text_annotation.added": {
        const part = this.part(item, d.content_index || 0, "output_text");
        part.annotations[d.annotation_index ?? part.annotations.length] = d.annotation;
        break;
      }
      case "refusal.delta": { const p = this.part(item, d.content_index || 0, "refusal"); p.refusal = (p.refusal || "") + (d.delta || ""); break; }
      case "refusal.done": this.part(item, d.content_index || 0, "refusal").refusal = d.refusal; break;
      case "reasoning_summary_part.added": item.summary[d.summary_index || 0] = item.summary[d.summary_index || 0] || { type: "summary_text", text: "" }; break;
      case "reasoning_summary_text.delta": summary(item, d).text += d.delta || ""; break;
      case "reasoning_summary_text.done": summary(item, d).text = d.text ?? summary(item, d).text; break;
      case "reasoning_text.delta": this.part(item, d.content_index || 0, "reasoning_text").text += d.delta || ""; break;
      case "reasoning_text.done": this.part(item, d.content_index || 0, "reasoning_text").text = d.text ?? ""; break;
      case "function_call_arguments.delta":
      case "mcp_call_arguments.delta": item.arguments = (item.arguments || "") + (d.delta || ""); break;
      case "function_call_arguments.done":
      case "mcp_call_arguments.done": item.arguments = d.arguments ?? item.arguments; break;
      case "custom_tool_call_input.delta": item.input = (item.input || "") + (d.delta || ""); break;
      case "custom_tool_call_input.done": item.input = d.input ?? item.input; break;
      case "code_interpreter_call_code.delta": item.code = (item.code || "") + (d.delta || ""); break;
      case "code_interpreter_call_code.done": item.code = d.code ?? item.code; break;
      case "image_generation_call.partial_image":
        item.partial_image = d.partial_image_b64;
        item.partial_index = d.partial_image_index;
        item.output_format = d.output_format || item.output_format;
        break;
      case "shell_call_command.added":
      case "shell_call_command.delta":
      case "shell_call_command.done": {
        item.commands = item.commands || [];
        const i = d.command_index || 0;
        if (s.endsWith("delta")) item.commands[i] = (item.commands[i] || "") + (d.delta || "");
        else if (d.command !== undefined) item.commands[i] = d.command;
        break;
      }
      case "shell_call_output_content.delta": {
        item.stdout = (item.stdout || "") + ((d.delta && d.delta.stdout) || "");
        item.stderr = (item.stderr || "") + ((d.delta && d.delta.stderr) || "");
        break;
      }
      case "audio.transcript.delta": item.transcript = (item.transcript || "") + (d.delta || ""); break;
      case "audio.delta": item.audio_chunks = (item.audio_chunks || 0) + 1; break;
      default: {
        const phase = s.split(".").pop();
        if (["in_progress", "searching", "interpreting", "generating", "completed", "failed", "compacting"].includes(phase)) {
          item.phase = phase;
        } else if (!s.endsWith(".done") && !s.endsWith(".delta")) {
          this.unknown.set(type, (this.unknown.get(type) || 0) + 1);
        } else if (s.endsWith(".delta") && typeof d.delta === "string") {
          item.extra = (item.extra || "") + d.delta;
        }
      }
    }
  }

  applyChat(chunk) {
    for (const choice of chunk.choices || []) {
      const item = this.item({ output_index: choice.index || 0 }, "message");
      const delta = choice.delta || {};
      if (typeof delta.content === "string") this.part(item, 0, "output_text").text += delta.content;
      if (typeof delta.refusal === "string") { const p = this.part(item, 0, "refusal"); p.refusal = (p.refusal || "") + delta.refusal; }
      for (const call of delta.tool_calls || []) {
        item.tool_calls = item.tool_calls || [];
        const slot = (item.tool_calls[call.index || 0] ||= { name: "", arguments: "" });
        if (call.function && call.function.name) slot.name += call.function.name;
        if (call.function && call.function.arguments) slot.arguments += call.function.arguments;
      }
      if (choice.finish_reason) item.status = choice.finish_reason;
    }
    if (chunk.usage) this.usage = chunk.usage;
  }

  takeDirty() {
    const keys = [...this.dirty];
    this.dirty.clear();
    return keys;
  }
}

function orderKeys(a, b) {
  const na = a.startsWith("o") ? Number(a.slice(1)) : Infinity;
  const nb = b.startsWith("o") ? Number(b.slice(1)) : Infinity;
  return na - nb;
}

function summary(item, d) {
  const i = d.summary_index || 0;
  return (item.summary[i] ||= { type: "summary_text", text: "" });
}

function guessItemType(suffix) {
  const head = suffix.split(".")[0];
  if (head.startsWith("output_text") || head.startsWith("refusal") || head === "content_part") return "message";
  if (head.startsWith("reasoning")) return "reasoning";
  if (head.startsWith("function_call")) return "function_call";
  if (head.startsWith("custom_tool_call")) return "custom_tool_call";
  if (head.startsWith("code_interpreter")) return "code_interpreter_call";
  if (head.startsWith("mcp_call")) return "mcp_call";
  if (head.startsWith("mcp_list_tools")) return "mcp_list_tools";
  if (head.startsWith("web_search")) return "web_search_call";
  if (head.startsWith("file_search")) return "file_search_call";
  if (head.startsWith("image_generation")) return "image_generation_call";
  if (head.startsWith("shell_call_output")) return "shell_call_output";
  if (head.startsWith("shell_call")) return "shell_call";
  if (head.startsWith("audio")) return "audio";
  if (head.startsWith("compaction")) return "compaction";
  return "unknown";
}

function mergeFinal(item, final, added = false) {
  for (const [key, value] of Object.entries(final)) {
    if (key === "content" && Array.isArray(value)) {
      if (added && !value.length) continue;
      value.forEach((part, i) => {
        const mine = item.content[i] || {};
        item.content[i] = { ...mine, ...part, annotations: part.annotations || mine.annotations || [] };
      });
    } else if (key === "summary" && Array.isArray(value)) {
      if (added && !value.length) continue;
      value.forEach((part, i) => { item.summary[i] = { ...(item.summary[i] || {}), ...part }; });
    } else if (added && (value === "" || value === null) && item[key]) {
      continue;
    } else {
      item[key] = value;
    }
  }
}
