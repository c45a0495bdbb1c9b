// Chat Completions chunks (`chat.completion.chunk`) into the OutputModel: one message per
// choice (output_text and refusal parts, logprobs), then one function_call per tool call — the
// same shape streams/protocol/chat_chunks.py rebuilds, so pages treat both protocols alike.

import { index, isObject } from "./values.js";

const INCOMPLETE_FINISH = new Set(["length", "content_filter"]);
const CHAT_BASE = 1e6; // chat items sort after any Responses items

/** Feed one chunk to `model` (an OutputModel). */
export function applyChat(model, chunk) {
  const chat = (model.chat ||= { choices: new Map(), usage: null, id: null, model: null });
  if (chat.id === null && typeof chunk.id === "string") chat.id = chunk.id;
  if (chat.model === null && typeof chunk.model === "string") chat.model = chunk.model;
  if (isObject(chunk.usage)) chat.usage = chunk.usage;
  (Array.isArray(chunk.choices) ? chunk.choices : []).forEach((raw, position) => {
    if (!isObject(raw)) return;
    const at = index(raw.index) ?? position;
    if (!chat.choices.has(at)) chat.choices.set(at, { role: null, content: null, refusal: null, logprobs: [], calls: new Map(), finish: null });
    const choice = chat.choices.get(at);
    const delta = isObject(raw.delta) ? raw.delta : {};
    if (typeof delta.role === "string") choice.role = delta.role;
    if (typeof delta.content === "string") choice.content = (choice.content || "") + delta.content;
    if (typeof delta.refusal === "string") choice.refusal = (choice.refusal || "") + delta.refusal;
    (Array.isArray(delta.tool_calls) ? delta.tool_calls : []).forEach((call, number) => {
      if (!isObject(call)) return;
      const slot = index(call.index) ?? number;
      if (!choice.calls.has(slot)) choice.calls.set(slot, { id: null, name: "", arguments: "" });
      const entry = choice.calls.get(slot);
      if (typeof call.id === "string" && call.id) entry.id = call.id;
      const fn = isObject(call.function) ? call.function : {};
      if (typeof fn.name === "string") entry.name += fn.name;
      if (typeof fn.arguments === "string") entry.arguments += fn.arguments;
    });
    if (isObject(raw.logprobs) && Array.isArray(raw.logprobs.content)) for (const entry of raw.logprobs.content) choice.logprobs.push(entry);
    if (typeof raw.finish_reason === "string") choice.finish = raw.finish_reason;
    syncChoice(model, at, choice);
  });
  const choices = [...chat.choices.values()];
  if (choices.length && choices.every((c) => c.finish !== null)) {
    const cut = choices.find((c) => INCOMPLETE_FINISH.has(c.finish));
    model.status = cut ? "incomplete" : "completed";
    // The same outcome card as a Responses stream: why it stopped short, and the usage chunk.
    model.response = { usage: chat.usage, incomplete_details: cut ? { reason: `finish_reason ${cut.finish}` } : null };
    model.outcome();
  }
}

function syncChoice(model, at, choice) {
  const status = choice.finish === null ? "in_progress" : INCOMPLETE_FINISH.has(choice.finish) ? "incomplete" : "completed";
  const done = choice.finish !== null;
  const base = CHAT_BASE + at * 1000;
  if (choice.content !== null || choice.refusal !== null || !choice.calls.size) {
    const item = model.pseudo(`c${at}m`, base, { type: "message", index: null, chat: true });
    const content = [];
    if (choice.content !== null || choice.refusal === null) content.push({ type: "output_text", text: choice.content || "", annotations: [], logprobs: choice.logprobs });
    if (choice.refusal !== null) content.push({ type: "refusal", text: choice.refusal, annotations: [], logprobs: [] });
    Object.assign(item, { content, status, done, data: { role: choice.role || "assistant", finish_reason: choice.finish } });
  }
  for (const [slot, call] of choice.calls) {
    const item = model.pseudo(`c${at}t${slot}`, base + 1 + slot, { type: "function_call", index: null, chat: true });
    Object.assign(item, { arguments: call.arguments, status, done, data: { name: call.name, call_id: call.id } });
  }
}
