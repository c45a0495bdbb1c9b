// Messages (text with citations and token probabilities, refusals, several parts) and
// reasoning (summary parts and raw reasoning text), drawn incrementally: a delta appends to
// a Text node; only a new citation or a change of mode lays a part out again.

import { el, externalLink, hostOf, itemHead, syncText } from "./render_util.js";

let footnoteIds = 0;

function markerPosition(note) {
  if (!note || typeof note !== "object") return null;
  if (Number.isInteger(note.end_index)) return note.end_index;
  if (Number.isInteger(note.index)) return note.index;
  return null;
}

function describeNote(note) {
  if (!note || typeof note !== "object") return "citation";
  if (note.type === "url_citation") return `${note.title || note.url || "source"}${note.url ? `\n${note.url}` : ""}`;
  return [note.filename, note.file_id, note.container_id].filter(Boolean).join(" · ") || note.type || "citation";
}

function probabilityClass(logprob) {
  const p = Math.exp(logprob);
  if (p >= 0.9) return "p-high";
  if (p >= 0.6) return "p-mid";
  if (p >= 0.3) return "p-low";
  return "p-vlow";
}

function pct(logprob) {
  const p = Math.exp(logprob) * 100;
  return p >= 99.995 ? "100%" : `${p.toFixed(p >= 10 ? 1 : 2)}%`;
}

function tokenTitle(entry) {
  const lines = [`${JSON.stringify(entry.token)}  ${pct(entry.logprob)}  (logprob ${Number(entry.logprob).toFixed(4)})`];
  const top = Array.isArray(entry.top_logprobs) ? entry.top_logprobs : [];
  if (top.length) {
    lines.push("alternatives:");
    for (const alt of top) if (alt && typeof alt.token === "string") lines.push(`  ${JSON.stringify(alt.token)}  ${pct(alt.logprob)}`);
  }
  return lines.join("\n");
}

/** One output_text part: its text (with footnote markers or token spans) and its sources. */
class TextPart {
  constructor(parent) {
    this.node = el("div", "part part-output_text");
    this.body = el("div", "text");
    this.body.dataset.textPart = "output_text";
    this.sources = el("ol", "citations");
    this.sources.hidden = true;
    this.node.append(this.body, this.sources);
    parent.append(this.node);
    this.shown = null; // the text as laid out
    this.layout = ""; // which markers / mode it was laid out with
    this.tail = null; // the Text node deltas are appended to
    this.ids = [];
  }

  update(part, showTokens) {
    const text = part.text || "";
    const notes = part.annotations || [];
    const positions = notes.map(markerPosition);
    const mode = showTokens && part.logprobs.length ? `tokens:${part.logprobs.length}` : "text";
    const layout = `${mode}|${positions.join(",")}`;
    const grows = this.shown !== null && text.length >= this.shown.length && text.startsWith(this.shown);
    const pending = positions.some((at) => at !== null && at > (this.shown || "").length);
    if (layout === this.layout && grows && !pending && mode === "text" && this.tail) {
      if (text.length > this.shown.length) this.tail.appendData(text.slice(this.shown.length));
    } else if (layout !== this.layout || text !== this.shown) {
      if (mode === "text") this.layOutText(text, notes, positions);
      else this.layOutTokens(text, part.logprobs);
    }
    this.shown = text;
    if (layout !== this.layout) this.drawSources(notes);
    this.layout = layout;
  }

  noteIds(count) {
    while (this.ids.length < count) this.ids.push(`cite-${++footnoteIds}`);
    return this.ids;
  }

  layOutText(text, notes, positions) {
    const ids = this.noteIds(notes.length);
    const order = notes.map((note, i) => i).filter((i) => positions[i] !== null).sort((a, b) => positions[a] - positions[b] || a - b);
    const pieces = [];
    let from = 0;
    for (const i of order) {
      const at = Math.min(positions[i], text.length);
      if (at > from) pieces.push(document.createTextNode(text.slice(from, at)));
      from = Math.max(from, at);
      const sup = el("sup", "cite-ref");
      const a = el("a");
      a.href = `#${ids[i]}`;
      a.dataset.n = String(i + 1);
      a.title = describeNote(notes[i]);
      a.setAttribute("aria-label", `source ${i + 1}`);
      sup.append(a);
      pieces.push(sup);
    }
    this.tail = document.createTextNode(text.slice(from));
    pieces.push(this.tail);
    this.body.replaceChildren(...pieces);
    this.body.classList.remove("tokens");
  }

  layOutTokens(text, logprobs) {
    const fragment = document.createDocumentFragment();
    let covered = 0;
    for (const entry of logprobs) {
      if (!entry || typeof entry.token !== "string") continue;
      const span = el("span", `tok ${Number.isFinite(entry.logprob) ? probabilityClass(entry.logprob) : ""}`, entry.token);
      if (Number.isFinite(entry.logprob)) span.title = tokenTitle(entry);
      fragment.append(span);
      covered += entry.token.length;
    }
    // Tokens that do not spell the text (bytes split across tokens): show the rest plainly.
    if (covered < text.length) fragment.append(document.createTextNode(text.slice(covered)));
    this.body.replaceChildren(fragment);
    this.body.classList.add("tokens");
    this.tail = null;
  }

  drawSources(notes) {
    const ids = this.noteIds(notes.length);
    this.sources.replaceChildren();
    notes.forEach((note, i) => {
      const li = el("li", `citation c-${note && typeof note.type === "string" ? note.type.replace(/[^a-z_]/g, "") : "unknown"}`);
      li.id = ids[i];
      if (note && note.type === "url_citation") {
        li.append(externalLink(note.url, note.title || note.url));
        const host = hostOf(note.url);
        if (host) li.append(el("span", "muted", ` · ${host}`));
      } else if (note && typeof note === "object") {
        li.append(el("span", "cite-file", note.filename || note.file_id || note.type || "source"));
        const extra = [note.filename ? note.file_id : null, note.container_id].filter(Boolean).join(" · ");
        if (extra) li.append(el("span", "muted", ` · ${extra}`));
      } else {
        li.append(el("span", "muted", "(annotation without details)"));
      }
      this.sources.append(li);
    });
    this.sources.hidden = !notes.length;
  }
}

class RefusalPart {
  constructor(parent) {
    this.node = el("div", "part part-refusal");
    this.node.append(el("div", "part-label", "Refusal"));
    this.body = el("div", "refusal");
    this.node.append(this.body);
    parent.append(this.node);
  }

  update(part) {
    syncText(this.body, part.text);
  }
}

class OtherPart {
  constructor(parent) {
    this.node = el("div", "part part-other");
    this.label = el("div", "part-label");
    this.body = el("pre", "code");
    this.node.append(this.label, this.body);
    parent.append(this.node);
  }

  update(part) {
    this.label.textContent = part.type || "part";
    syncText(this.body, part.text);
  }
}

const PART_VIEWS = { output_text: TextPart, refusal: RefusalPart };

export function messageView(node) {
  const head = itemHead("message");
  const toggle = el("label", "token-toggle");
  const box = el("input");
  box.type = "checkbox";
  toggle.append(box, document.createTextNode(" token probabilities"));
  toggle.hidden = true;
  head.node.append(toggle);
  const parts = el("div", "parts");
  const legend = el("p", "token-legend small");
  legend.append(
    document.createTextNode("Token probability: "), el("span", "tok p-mid", "below 90%"), document.createTextNode(" · "),
    el("span", "tok p-low", "below 60%"), document.createTextNode(" · "), el("span", "tok p-vlow", "below 30%"),
    document.createTextNode(" — hover a token for its alternatives."),
  );
  legend.hidden = true;
  const empty = el("p", "muted small empty-note", "(no text)");
  empty.hidden = true;
  node.append(head.node, legend, parts, empty);
  const views = [];
  let last = null;
  box.addEventListener("change", () => last && update(last));

  function update(item) {
    last = item;
    const role = item.data && typeof item.data.role === "string" ? item.data.role : "";
    head.update(item, { label: role && role !== "assistant" ? `message · ${role}` : "message" });
    const content = item.content || [];
    content.forEach((part, i) => {
      if (!part) return;
      const View = PART_VIEWS[part.type] || OtherPart;
      if (!views[i] || !(views[i] instanceof View)) {
        const view = new View(parts);
        if (views[i]) views[i].node.replaceWith(view.node);
        else parts.append(view.node);
        views[i] = view;
      }
      views[i].node.classList.toggle("multi", content.length > 1);
      if (content.length > 1) views[i].node.dataset.n = String(i + 1);
      views[i].update(part, box.checked);
    });
    for (const stale of views.splice(content.length)) if (stale) stale.node.remove();
    toggle.hidden = !content.some((part) => part && part.logprobs && part.logprobs.length);
    legend.hidden = toggle.hidden || !box.checked;
    empty.hidden = !item.done || content.some((part) => part && part.text);
  }
  return { update };
}

/** "**Title**\n\nBody" (how summaries are written) -> {title, body}. */
function splitSummary(text) {
  if (!text.startsWith("**")) return { title: "", body: text };
  const close = text.indexOf("**", 2);
  if (close < 0) return { title: text.slice(2), body: "" };
  return { title: text.slice(2, close), body: text.slice(close + 2).replace(/^\s+/, "") };
}

export function reasoningView(node) {
  const details = el("details", "reasoning-body");
  const summary = el("summary");
  const head = itemHead("reasoning");
  const peek = el("span", "reasoning-peek");
  summary.append(head.node, peek);
  const parts = el("div", "summary-parts");
  const raw = el("div", "reasoning-raw");
  const hidden = el("p", "muted small");
  details.append(summary, parts, raw, hidden);
  node.append(details);
  let userToggled = false;
  let expected = false;
  details.addEventListener("toggle", () => {
    if (details.open !== expected) userToggled = true;
  });
  const summaryViews = [];
  const rawViews = [];

  return {
    update(item) {
      head.update(item);
      const summaries = (item.summary || []).filter(Boolean);
      summaries.forEach((part, i) => {
        if (!summaryViews[i]) {
          const box = el("div", "summary-part");
          const title = el("strong", "summary-title");
          const body = el("p", "summary-text");
          box.append(title, body);
          parts.append(box);
          summaryViews[i] = { title, body };
        }
        const { title, body } = splitSummary(part.text || "");
        syncText(summaryViews[i].title, title);
        summaryViews[i].title.hidden = !title;
        syncText(summaryViews[i].body, body);
      });
      const texts = (item.content || []).filter((part) => part && typeof part.text === "string");
      texts.forEach((part, i) => {
        if (!rawViews[i]) {
          rawViews[i] = el("pre", "reasoning-text");
          raw.append(rawViews[i]);
        }
        syncText(rawViews[i], part.text);
      });
      const chars = summaries.reduce((n, p) => n + (p.text || "").length, 0) + texts.reduce((n, p) => n + p.text.length, 0);
      const encrypted = item.data && typeof item.data.encrypted_content === "string" ? item.data.encrypted_content.length : 0;
      const lastSummary = summaries.length ? splitSummary(summaries[summaries.length - 1].text || "") : null;
      // The peek shows the latest summary title, else the start of what the model thought.
      const firstWords = ((lastSummary && lastSummary.body) || (texts.length ? texts[texts.length - 1].text : "")).slice(0, 160);
      const lastTitle = (lastSummary && lastSummary.title) || firstWords.replace(/\s+/g, " ").trim();
      const facts = [];
      if (summaries.length) facts.push(`${summaries.length} summary part${summaries.length > 1 ? "s" : ""}`);
      if (texts.length) facts.push("raw reasoning");
      if (chars) facts.push(`${chars.toLocaleString()} chars`);
      if (!chars && item.done) facts.push(encrypted ? "encrypted, no summary requested" : "no reasoning text streamed");
      peek.textContent = [lastTitle, facts.join(" · ")].filter(Boolean).join(" — ");
      hidden.hidden = Boolean(chars) || !item.done;
      hidden.textContent = encrypted
        ? `The reasoning is encrypted (${encrypted.toLocaleString()} chars of encrypted_content); no summary was requested.`
        : "No reasoning text was streamed.";
      if (!userToggled) {
        const open = !item.done && chars > 0;
        if (details.open !== open) {
          expected = open;
          details.open = open;
        }
      }
    },
  };
}
