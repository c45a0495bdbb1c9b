// Tool items: function / custom / MCP calls (arguments pretty-printed while they stream), the
// hosted shell, apply_patch, compaction, and a generic card for anything else. Search, code
// interpreter and image generation live in render_hosted.js.

import { fmtBytes } from "./format.js";
import { el, itemHead, liveBlock, prettyJson, syncText } from "./render_util.js";
import { str } from "./values.js";

/** Arguments as they stream: indented while partial, formatted once parseable. */
function argumentsBlock(parent) {
  const pre = el("pre", "code json");
  const state = el("div", "json-state small");
  parent.append(pre, state);
  return (text, done) => {
    const { text: shown, state: kind } = prettyJson(text || "");
    syncText(pre, shown);
    pre.hidden = !text;
    let label = "";
    if (!text) label = done ? "no arguments" : "waiting for arguments…";
    else if (kind === "valid") label = done ? "" : "valid JSON so far";
    else label = done ? "not valid JSON (shown as received)" : `streaming… ${text.length.toLocaleString()} chars`;
    state.textContent = label;
    state.className = `json-state small ${kind === "partial" && done ? "error-text" : "muted"}`;
    state.hidden = !label;
  };
}

/** A prominent error box (failed MCP call, failed tool listing, …). */
function errorBox(parent) {
  const box = el("div", "item-error");
  box.setAttribute("role", "alert");
  box.hidden = true;
  parent.append(box);
  return (error, prefix) => {
    if (!error) {
      box.hidden = true;
      return;
    }
    const message = typeof error === "string" ? error : error.message || JSON.stringify(error);
    box.textContent = `${prefix}: ${message}`;
    box.hidden = false;
  };
}

export function functionCallView(node) {
  const head = itemHead("function call");
  const call = el("div", "muted small call-id");
  node.append(head.node, call);
  const args = argumentsBlock(node);
  return {
    update(item) {
      head.update(item, { name: str(item.data.name, "") });
      call.textContent = item.data.call_id ? `call_id ${item.data.call_id}` : "";
      call.hidden = !item.data.call_id;
      args(item.arguments, item.done);
    },
  };
}

export function customToolView(node) {
  const head = itemHead("custom tool call");
  const call = el("div", "muted small call-id");
  const input = liveBlock("code");
  node.append(head.node, call, input.node);
  return {
    update(item) {
      head.update(item, { name: str(item.data.name, "") });
      call.textContent = item.data.call_id ? `call_id ${item.data.call_id}` : "";
      call.hidden = !item.data.call_id;
      input.set(item.input || "");
    },
  };
}

export function mcpCallView(node) {
  const head = itemHead("MCP call");
  node.append(head.node);
  const args = argumentsBlock(node);
  const outputLabel = el("div", "part-label", "Output");
  const output = el("pre", "code output-log");
  node.append(outputLabel, output);
  const error = errorBox(node);
  return {
    update(item) {
      const server = str(item.data.server_label, "");
      head.update(item, { name: [server, str(item.data.name, "")].filter(Boolean).join(" · ") });
      args(item.arguments, item.done || item.phase === "failed");
      const out = item.data.output;
      const text = typeof out === "string" ? prettyJson(out).state === "valid" ? prettyJson(out).text : out : out ? JSON.stringify(out, null, 2) : "";
      syncText(output, text);
      output.hidden = outputLabel.hidden = !text;
      const failed = item.phase === "failed" || item.status === "failed";
      error(item.data.error || (failed ? "the MCP server reported a failure" : null), "Call failed");
    },
  };
}

export function mcpListToolsView(node) {
  const head = itemHead("MCP tools");
  const list = el("ul", "tool-list");
  node.append(head.node, list);
  const error = errorBox(node);
  return {
    update(item) {
      const server = str(item.data.server_label, "");
      head.update(item, { name: server });
      list.replaceChildren();
      for (const tool of Array.isArray(item.data.tools) ? item.data.tools : []) {
        if (!tool || typeof tool !== "object") continue;
        const li = el("li");
        li.append(el("code", null, str(tool.name, "") || "?"));
        if (tool.description) li.append(el("span", "muted", ` — ${tool.description}`));
        list.append(li);
      }
      const failed = item.phase === "failed" || item.status === "failed";
      error(item.data.error || (failed ? "listing the tools failed" : null), "Listing tools failed");
      if (!list.children.length && item.done && !failed) list.append(el("li", "muted", "no tools"));
    },
  };
}

export function mcpApprovalView(node) {
  const head = itemHead("MCP approval request");
  node.append(head.node);
  const args = argumentsBlock(node);
  return {
    update(item) {
      head.update(item, { name: [str(item.data.server_label, ""), str(item.data.name, "")].filter(Boolean).join(" · ") });
      args(item.data.arguments, true);
    },
  };
}

export function shellCallView(node) {
  const head = itemHead("shell");
  const commands = el("div", "shell-commands");
  const meta = el("div", "muted small");
  node.append(head.node, commands, meta);
  const blocks = [];
  return {
    update(item) {
      head.update(item);
      (item.commands || []).forEach((command, i) => {
        if (!blocks[i]) {
          blocks[i] = el("pre", "code shell-command");
          commands.append(blocks[i]);
        }
        syncText(blocks[i], `$ ${command || ""}`);
      });
      const action = item.data.action && typeof item.data.action === "object" ? item.data.action : {};
      meta.textContent = Number.isFinite(action.timeout_ms) ? `timeout ${action.timeout_ms / 1000} s` : "";
      meta.hidden = !meta.textContent;
    },
  };
}

export function shellOutputView(node) {
  const head = itemHead("shell output");
  const list = el("div", "shell-outputs");
  node.append(head.node, list);
  const blocks = [];
  return {
    update(item) {
      head.update(item);
      (item.outputs || []).forEach((out, i) => {
        if (!out) return;
        if (!blocks[i]) {
          const box = el("div", "shell-output");
          const command = el("div", "shell-cmd");
          const stdout = el("pre", "code output-log");
          const stderr = el("pre", "code output-log stderr");
          const exit = el("div", "shell-exit small");
          box.append(command, stdout, stderr, exit);
          list.append(box);
          blocks[i] = { command, stdout, stderr, exit };
        }
        const view = blocks[i];
        const command = item.callCommands && item.callCommands[i];
        view.command.textContent = command ? `$ ${command}` : `command ${i + 1}`;
        syncText(view.stdout, str(out.stdout, ""));
        syncText(view.stderr, str(out.stderr, ""));
        view.stdout.hidden = !out.stdout;
        view.stderr.hidden = !out.stderr;
        const outcome = out.outcome && typeof out.outcome === "object" ? out.outcome : null;
        if (outcome && outcome.type === "exit") {
          view.exit.textContent = `exit ${outcome.exit_code}`;
          view.exit.className = `shell-exit small ${outcome.exit_code === 0 ? "ok" : "error-text"}`;
        } else if (outcome) {
          view.exit.textContent = String(outcome.type || "");
          view.exit.className = "shell-exit small error-text";
        } else {
          view.exit.textContent = "";
        }
        view.exit.hidden = !view.exit.textContent;
      });
    },
  };
}

export function compactionView(node) {
  const head = itemHead("compaction");
  const text = el("p", "small");
  node.append(head.node, text);
  return {
    update(item) {
      head.update(item);
      const size = str(item.data.encrypted_content, "").length;
      text.textContent = item.done
        ? `The conversation context was compacted${size ? ` into ${size.toLocaleString()} chars of encrypted_content` : ""}.`
        : "Compacting the conversation context…";
    },
  };
}

export function applyPatchView(node) {
  const head = itemHead("apply patch");
  const diff = el("pre", "code diff");
  node.append(head.node, diff);
  let shown = null;
  return {
    update(item) {
      const op = item.data.operation && typeof item.data.operation === "object" ? item.data.operation : {};
      head.update(item, { name: [str(op.type, "").replaceAll("_", " "), str(op.path, "")].filter(Boolean).join(" ") });
      const text = item.diff || "";
      if (text === shown) return;
      shown = text;
      diff.replaceChildren();
      for (const line of text.split("\n")) {
        const kind = line.startsWith("@@") ? "d-hunk" : line.startsWith("+") ? "d-add" : line.startsWith("-") ? "d-del" : "d-ctx";
        diff.append(el("span", kind, `${line}\n`));
      }
    },
  };
}

const HIDDEN_KEYS = new Set(["type", "id", "status"]);

/** Any other item type (computer_call, local_shell_call, types no SDK knows yet…). */
export function genericView(node, known = false) {
  const head = itemHead("item");
  const note = el("p", "muted small");
  const body = el("pre", "code");
  node.append(head.node, note, body);
  return {
    update(item) {
      head.update(item, { label: String(item.type || "item").replaceAll("_", " ") });
      note.textContent = known ? "" : `Streamscope has no special view for “${item.type}” items; their fields as sent:`;
      note.hidden = known;
      const fields = {};
      for (const [key, value] of Object.entries(item.data || {})) if (!HIDDEN_KEYS.has(key)) fields[key] = value;
      for (const key of ["arguments", "input", "code", "diff"]) if (item[key]) fields[key] = item[key];
      const text = Object.keys(fields).length ? JSON.stringify(fields, null, 2) : "";
      syncText(body, text.length > 20000 ? `${text.slice(0, 20000)}\n… (${fmtBytes(text.length)} in all)` : text);
      body.hidden = !text;
    },
  };
}
