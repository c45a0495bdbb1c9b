// Small DOM helpers shared by the item renderers, the flag panel and the compare tables (el() is
// the one element builder). Model output only ever reaches the page through textContent, Text
// nodes or attributes checked here (links: http/https only).

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

/** An http(s) URL as an absolute string, or null for anything else (javascript:, data:, …). */
export function safeUrl(url) {
  if (typeof url !== "string" || !url) return null;
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

/** A link that opens outside the app, or a plain span when the URL is not http(s). */
export function externalLink(url, label, className) {
  const href = safeUrl(url);
  if (!href) return el("span", className, label || url);
  const a = el("a", className, label || href);
  a.href = href;
  a.target = "_blank";
  a.rel = "noopener noreferrer nofollow";
  return a;
}

export function hostOf(url) {
  try {
    return new URL(url).hostname;
  } catch {
    return "";
  }
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;
/** A data: URL for a base64 image, or null when the payload is not plain base64. */
export function imageDataUrl(b64, format) {
  if (typeof b64 !== "string" || !b64 || !BASE64.test(b64)) return null;
  const kind = /^(png|jpeg|jpg|webp|gif)$/.test(format || "") ? format : "png";
  return `data:image/${kind === "jpg" ? "jpeg" : kind};base64,${b64}`;
}

// What each element last showed, so a growing text is appended instead of rewritten.
const shown = new WeakMap();

/**
 * Make `node` show `text`. When the new text extends what it showed, only the new tail is
 * appended to its Text node: a long answer is not re-laid out from scratch on every frame.
 */
export function syncText(node, text) {
  const value = text === null || text === undefined ? "" : String(text);
  const before = shown.get(node);
  if (before === value) return;
  const last = node.lastChild;
  if (before !== undefined && value.startsWith(before) && last && last.nodeType === Node.TEXT_NODE && node.childNodes.length === 1) {
    last.appendData(value.slice(before.length));
  } else {
    node.replaceChildren(document.createTextNode(value));
  }
  shown.set(node, value);
}

/** Forget what syncText showed (after the node's children were replaced another way). */
export function forgetText(node) {
  shown.delete(node);
}

/**
 * Pretty-print JSON that may still be streaming: parseable text is formatted canonically,
 * a prefix is indented as far as it goes. Returns {text, state: empty|valid|partial}.
 */
export function prettyJson(source) {
  if (!source) return { text: "", state: "empty" };
  try {
    return { text: JSON.stringify(JSON.parse(source), null, 2), state: "valid" };
  } catch {
    return { text: indentPartial(source), state: "partial" };
  }
}

function indentPartial(source) {
  let out = "";
  let depth = 0;
  let inString = false;
  let escaped = false;
  let opened = false; // a container just opened: its newline waits for the next character
  const pad = () => "\n" + "  ".repeat(depth);
  for (const ch of source) {
    if (inString) {
      out += ch;
      if (escaped) escaped = false;
      else if (ch === "\\") escaped = true;
      else if (ch === '"') inString = false;
      continue;
    }
    if (ch === " " || ch === "\n" || ch === "\r" || ch === "\t") continue;
    if (opened) {
      opened = false;
      if (ch === "}" || ch === "]") {
        depth = Math.max(0, depth - 1);
        out += ch;
        continue;
      }
      out += pad();
    }
    if (ch === '"') {
      inString = true;
      out += ch;
    } else if (ch === "{" || ch === "[") {
      out += ch;
      depth += 1;
      opened = true;
    } else if (ch === "}" || ch === "]") {
      depth = Math.max(0, depth - 1);
      out += pad() + ch;
    } else if (ch === ",") {
      out += "," + pad();
    } else if (ch === ":") {
      out += ": ";
    } else {
      out += ch;
    }
  }
  return out;
}

export function cssName(value) {
  return String(value || "unknown").replace(/[^a-zA-Z0-9_-]/g, "_");
}

/**
 * The head line of an item card: type label, name, phase trail, output index.
 * Returns {node, update(item, {label, name})}.
 */
export function itemHead(label) {
  const node = el("div", "item-head");
  const type = el("span", "item-type", label);
  const name = el("code", "item-name");
  const trail = el("span", "item-phases");
  const where = el("span", "item-index");
  node.append(type, name, trail, where);
  let trailKey = "";
  return {
    node,
    type,
    update(item, { name: nameText = null, label: labelText = null } = {}) {
      if (labelText !== null) type.textContent = labelText;
      name.textContent = nameText || "";
      name.hidden = !nameText;
      where.textContent = Number.isInteger(item.index) ? `#${item.index}` : "";
      const steps = [...(item.phases || [])];
      const final = item.status;
      if (final && steps[steps.length - 1] !== final) steps.push(final);
      if (!steps.length && !item.done) steps.push("streaming");
      const key = steps.join(">");
      if (key === trailKey) return;
      trailKey = key;
      trail.replaceChildren();
      steps.forEach((step, i) => {
        if (i) trail.append(el("span", "phase-sep", "›"));
        const current = i === steps.length - 1;
        trail.append(el("span", current ? `item-status s-${cssName(step)}` : "phase-past", step.replaceAll("_", " ")));
      });
    },
  };
}

/** A <pre> that follows a growing string (code, arguments, commands). */
export function liveBlock(className) {
  const node = el("pre", className);
  return { node, set: (text) => syncText(node, text) };
}
