// Run-level cards shown in the output flow: malformed lines (prominent, with the raw text),
// response-level audio (transcript, chunks, a play button) and the outcome of the response
// (failed with its error, incomplete with its reason, usage when it completed).

import { fmtBytes } from "./format.js";
import { el, syncText } from "./render_util.js";

const SHOWN_MALFORMED = 50;
const AUDIO_RATE = 24000; // Responses audio deltas are 24 kHz mono PCM16
const SNAPSHOT_STATUS = { queued: "queued", in_progress: "in progress", cancelled: "cancelled" };

export function malformedView(node) {
  const head = el("div", "item-head");
  const title = el("span", "item-type", "malformed line");
  head.append(title);
  const list = el("div", "malformed-lines");
  const more = el("p", "muted small");
  node.append(head, list, more);
  node.setAttribute("role", "alert");
  let drawn = 0;
  return {
    update(item) {
      const lines = item.lines || [];
      title.textContent = lines.length === 1 ? "malformed line" : `${lines.length} malformed lines`;
      for (; drawn < Math.min(lines.length, SHOWN_MALFORMED); drawn++) {
        const line = lines[drawn];
        const box = el("div", "malformed-line");
        const where = line.where === "line" ? "not an SSE field" : "data is not JSON";
        box.append(el("div", "small", `event #${line.seq ?? "?"} · ${where}${line.error ? ` · ${line.error}` : ""}`));
        box.append(el("pre", "code raw-line", line.raw || "(empty)"));
        list.append(box);
      }
      more.textContent = lines.length > SHOWN_MALFORMED ? `…and ${lines.length - SHOWN_MALFORMED} more (see the event list).` : "";
      more.hidden = !more.textContent;
    },
  };
}

function usageText(usage) {
  if (!usage || typeof usage !== "object") return "";
  const parts = [];
  if (Number.isFinite(usage.input_tokens)) {
    const cached = usage.input_tokens_details && usage.input_tokens_details.cached_tokens;
    parts.push(`input ${usage.input_tokens.toLocaleString()}${cached ? ` (${cached.toLocaleString()} cached)` : ""}`);
  }
  if (Number.isFinite(usage.output_tokens)) {
    const reasoning = usage.output_tokens_details && usage.output_tokens_details.reasoning_tokens;
    parts.push(`output ${usage.output_tokens.toLocaleString()}${reasoning ? ` (${reasoning.toLocaleString()} reasoning)` : ""}`);
  }
  // Chat Completions names them differently.
  if (Number.isFinite(usage.prompt_tokens)) parts.push(`prompt ${usage.prompt_tokens.toLocaleString()}`);
  if (Number.isFinite(usage.completion_tokens)) parts.push(`completion ${usage.completion_tokens.toLocaleString()}`);
  if (Number.isFinite(usage.total_tokens)) parts.push(`total ${usage.total_tokens.toLocaleString()}`);
  return parts.length ? `Tokens: ${parts.join(" · ")}` : "";
}

export function outcomeView(node) {
  const title = el("div", "outcome-title");
  const detail = el("div", "outcome-detail");
  const usage = el("div", "muted small");
  node.append(title, detail, usage);
  return {
    update(item) {
      const response = item.response && typeof item.response === "object" ? item.response : {};
      const errors = item.errors || [];
      let kind = "ok";
      detail.replaceChildren();
      if (item.status === "failed" || (errors.length && item.status !== "completed")) {
        kind = "failed";
        title.textContent = item.status === "failed" ? "Response failed" : "Error in the stream";
        for (const error of errors) {
          const line = el("div", "outcome-error");
          line.append(el("strong", null, error.code ? `${error.code}: ` : ""), document.createTextNode(error.message));
          if (error.param) line.append(el("span", "muted", ` (param ${error.param})`));
          detail.append(line);
        }
      } else if (item.status === "incomplete") {
        kind = "incomplete";
        const reason = response.incomplete_details && response.incomplete_details.reason;
        title.textContent = "Response incomplete";
        detail.textContent = reason ? `Reason: ${reason}` : "The response ended before it was complete.";
      } else if (item.status === "completed" && response.usage) {
        title.textContent = "Response completed";
      } else if (!item.status && Object.hasOwn(SNAPSHOT_STATUS, response.status)) {
        // A non-streamed answer that is no end: a background request's queued Response, or a cancelled one.
        kind = "pending";
        title.textContent = `Response ${SNAPSHOT_STATUS[response.status]}`;
        detail.textContent = response.status === "cancelled" ? "The response was cancelled."
          : `The answer was the response as ${SNAPSHOT_STATUS[response.status]}${typeof response.id === "string" ? ` (${response.id})` : ""}; the model writes its output after this run.`;
      } else {
        title.textContent = "";
      }
      usage.textContent = usageText(response.usage);
      usage.hidden = !usage.textContent;
      node.classList.add(`outcome-${kind}`);
      node.hidden = !title.textContent;
      if (kind === "failed" || kind === "incomplete") node.setAttribute("role", "alert");
    },
  };
}

function decodePcm16(pieces) {
  const chunks = pieces.map((b64) => {
    const binary = atob(b64);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  });
  const total = chunks.reduce((n, c) => n + c.length, 0);
  const joined = new Uint8Array(total);
  let at = 0;
  for (const c of chunks) {
    joined.set(c, at);
    at += c.length;
  }
  const view = new DataView(joined.buffer);
  const samples = new Float32Array(Math.floor(total / 2));
  for (let i = 0; i < samples.length; i++) samples[i] = view.getInt16(i * 2, true) / 32768;
  return samples;
}

export function audioView(node) {
  const head = el("div", "item-head");
  head.append(el("span", "item-type", "audio"));
  const status = el("span", "item-status");
  head.append(status);
  const transcript = el("div", "text audio-transcript");
  const meta = el("div", "muted small audio-meta");
  const play = el("button", "small-button", "▶ Play");
  play.type = "button";
  play.hidden = true;
  meta.append(document.createTextNode(""), play);
  node.append(head, transcript, meta);
  let current = null;
  play.addEventListener("click", () => {
    if (!current || !current.pieces.length) return;
    try {
      const samples = decodePcm16(current.pieces);
      const context = new AudioContext({ sampleRate: AUDIO_RATE });
      const buffer = context.createBuffer(1, samples.length, AUDIO_RATE);
      buffer.copyToChannel(samples, 0);
      const source = context.createBufferSource();
      source.buffer = buffer;
      source.connect(context.destination);
      source.onended = () => context.close();
      source.start();
    } catch (err) {
      play.disabled = true;
      play.title = `This audio cannot be played here: ${err.message}`;
    }
  });
  return {
    update(item) {
      current = item;
      status.textContent = item.done ? "completed" : "streaming";
      status.className = `item-status s-${item.done ? "completed" : "in_progress"}`;
      syncText(transcript, item.transcript);
      const seconds = item.bytes / 2 / AUDIO_RATE;
      meta.firstChild.textContent = `${item.chunks} audio chunk${item.chunks === 1 ? "" : "s"} · ${fmtBytes(item.bytes)} · ${seconds.toFixed(2)} s of 24 kHz PCM16 `;
      play.hidden = !item.audioDone || !item.chunks || typeof AudioContext === "undefined";
    },
  };
}
