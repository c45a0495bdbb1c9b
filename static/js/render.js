// Drawing output items. One function per item type; unknown types get a generic card.
// Model output only ever reaches the DOM through textContent or vetted attributes.

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return ["http:", "https:"].includes(parsed.protocol) ? parsed.href : null;
  } catch {
    return null;
  }
}

function prettyJson(text) {
  if (!text) return "";
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text; // still streaming (or not JSON): show it as it is
  }
}

function header(item, label) {
  const head = el("div", "item-head");
  head.append(el("span", `item-type t-${item.type}`, label || item.type));
  const state = item.phase || item.status;
  if (state) head.append(el("span", `item-status s-${state}`, state));
  if (item.name) head.append(el("code", "item-name", item.name));
  return head;
}

function textWithAnnotations(part) {
  const box = el("div", "text");
  box.append(document.createTextNode(part.text || ""));
  const notes = (part.annotations || []).filter(Boolean);
  if (notes.length) {
    const list = el("ol", "citations");
    for (const note of notes) {
      const li = el("li", `citation c-${note.type}`);
      const href = note.url ? safeUrl(note.url) : null;
      if (href) {
        const a = el("a", null, note.title || note.url);
        a.href = href;
        a.rel = "noopener noreferrer nofollow";
        a.target = "_blank";
        li.append(a);
      } else {
        li.append(el("span", null, note.filename || note.file_id || note.title || note.type));
      }
      if (note.index !== undefined) li.append(el("span", "muted", ` @${note.index}`));
      list.append(li);
    }
    box.append(list);
  }
  return box;
}

const RENDERERS = {
  message(item, node) {
    node.append(header(item, item.role ? `message · ${item.role}` : "message"));
    for (const part of item.content) {
      if (!part) continue;
      if (part.type === "refusal") node.append(el("div", "refusal", part.refusal || ""));
      else node.append(textWithAnnotations(part));
    }
    for (const call of item.tool_calls || []) {
      node.append(el("div", "item-head", `tool call · ${call.name}`));
      node.append(el("pre", "code", prettyJson(call.arguments)));
    }
  },
  reasoning(item, node) {
    const details = el("details", "reasoning-body");
    details.open = item.status !== "completed";
    const summaryEl = el("summary");
    summaryEl.append(header(item, "reasoning"));
    details.append(summaryEl);
    for (const part of item.summary || []) if (part) details.append(el("p", "summary-text", part.text || ""));
    for (const part of item.content || []) if (part && part.text) details.append(el("pre", "reasoning-text", part.text));
    if (!(item.summary || []).length && !(item.content || []).some((p) => p && p.text)) {
      details.append(el("p", "muted", item.encrypted_content ? "Reasoning is encrypted; no summary was requested." : "No reasoning text streamed."));
    }
    node.append(details);
  },
  function_call(item, node) {
    node.append(header(item, "function call"));
    if (item.call_id) node.append(el("div", "muted small", `call_id ${item.call_id}`));
    node.append(el("pre", "code", prettyJson(item.arguments)));
  },
  custom_tool_call(item, node) {
    node.append(header(item, "custom tool call"));
    node.append(el("pre", "code", item.input || ""));
  },
  code_interpreter_call(item, node) {
    node.append(header(item, "code interpreter"));
    node.append(el("pre", "code", item.code || ""));
    for (const out of item.outputs || []) node.append(el("pre", "code output-log", out.logs || out.url || JSON.stringify(out)));
  },
  image_generation_call(item, node) {
    node.append(header(item, "image generation"));
    const b64 = item.result || item.partial_image;
    if (b64) {
      const img = el("img", "generated");
      img.alt = item.result ? "generated image" : `partial image ${item.partial_index ?? ""}`;
      img.src = `data:image/${item.output_format || "png"};base64,${b64}`;
      node.append(img);
    }
  },
  mcp_call(item, node) {
    node.append(header(item, `MCP call${item.server_label ? " · " + item.server_label : ""}`));
    node.append(el("pre", "code", prettyJson(item.arguments)));
    if (item.output) node.append(el("pre", "code output-log", item.output));
    if (item.error) node.append(el("div", "error-text", typeof item.error === "string" ? item.error : JSON.stringify(item.error)));
  },
  mcp_list_tools(item, node) {
    node.append(header(item, `MCP tools${item.server_label ? " · " + item.server_label : ""}`));
    const list = el("ul", "tools");
    for (const tool of item.tools || []) list.append(el("li", null, tool.name));
    node.append(list);
    if (item.error) node.append(el("div", "error-text", String(item.error)));
  },
  shell_call(item, node) {
    node.append(header(item, "shell"));
    const commands = item.commands || (item.action && item.action.commands) || [];
    for (const command of commands) node.append(el("pre", "code", `$ ${command}`));
  },
  shell_call_output(item, node) {
    node.append(header(item, "shell output"));
    if (item.stdout) node.append(el("pre", "code output-log", item.stdout));
    if (item.stderr) node.append(el("pre", "code output-log stderr", item.stderr));
    for (const out of item.output || []) {
      if (!item.stdout && out.stdout) node.append(el("pre", "code output-log", out.stdout));
      if (!item.stderr && out.stderr) node.append(el("pre", "code output-log stderr", out.stderr));
    }
  },
};

function generic(item, node) {
  node.append(header(item, item.type.replaceAll("_", " ")));
  const details = {};
  for (const key of ["action", "queries", "results", "transcript", "extra", "input", "arguments", "output"]) {
    if (item[key] !== undefined && item[key] !== null) details[key] = item[key];
  }
  if (Object.keys(details).length) node.append(el("pre", "code", JSON.stringify(details, null, 2)));
}

export function renderItem(item, node) {
  node.replaceChildren();
  node.className = `item item-${item.type}`;
  (RENDERERS[item.type] || generic)(item, node);
}
