// Moderation flags on a run view: one card per flag (rule, where, the event where it first
// matched, the match in context) and the matched span highlighted in the rendered output text.
// Model output reaches the DOM only through text nodes and textContent.

import { el } from "./render_util.js";

const SCOPE_LABELS = { output_text: "output text", reasoning: "reasoning", tool_arguments: "tool arguments", input: "input" };

export class FlagPanel {
  constructor(view) {
    this.view = view;
    this.flags = new Map();
    this.ranges = new Map(); // flag id -> Range over the output text
    this.el = el("div", "run-flags");
    this.el.dataset.flags = "";
    this.el.setAttribute("role", "status");
    this.el.hidden = true;
    const anchor = view.errorEl || view.root.firstElementChild;
    if (anchor) anchor.after(this.el);
    else view.root.prepend(this.el);
  }

  add(flag) {
    if (!flag || this.flags.has(flag.id)) return;
    this.flags.set(flag.id, flag);
    this.el.append(this.card(flag));
    this.el.hidden = false;
    this.highlight();
  }

  clear() {
    this.flags.clear();
    this.ranges.clear();
    if (HIGHLIGHTS) paint(this, []);
    this.el.replaceChildren();
    this.el.hidden = true;
  }

  card(flag) {
    const card = el("div", `flag flag-${flag.action}`);
    card.dataset.flagId = flag.id;
    const verb = flag.action === "stop" ? "Stopped" : "Flagged";
    card.append(el("span", "flag-title", `${verb} by ${flag.source === "model" ? "" : "rule "}“${flag.rule_name}”`));
    const where = el("span", "muted");
    const parts = [SCOPE_LABELS[flag.scope] || flag.scope];
    if (flag.location && flag.location !== "input") parts.push(flag.location);
    where.append(document.createTextNode(` ${parts.join(" · ")}`));
    if (flag.seq !== null && flag.seq !== undefined) {
      where.append(document.createTextNode(" · first matched at "));
      const link = el("button", "link flag-seq", `event #${flag.seq}`);
      link.type = "button";
      link.dataset.flagSeq = flag.seq;
      link.addEventListener("click", () => this.view.list && this.view.list.selectSeq(flag.seq));
      where.append(link);
    }
    card.append(where);
    if (flag.matched_text) {
      const context = el("p", "flag-context");
      context.append(document.createTextNode(`…${flag.context_before || ""}`));
      context.append(el("mark", null, flag.matched_text));
      context.append(document.createTextNode(`${flag.context_after || ""}…`));
      card.append(context);
    }
    return card;
  }

  // Mark each output-text flag's span in the rendered output. The renderers update their text
  // nodes in place as deltas arrive, so the DOM is left alone: a CSS Custom Highlight paints
  // Ranges over it (re-found only when a range no longer spells the match, e.g. after a re-layout).
  highlight() {
    const out = this.view.outputEl;
    if (!out || !HIGHLIGHTS) return;
    let changed = false;
    for (const flag of this.flags.values()) {
      if (flag.scope !== "output_text" || !flag.matched_text) continue;
      const range = this.ranges.get(flag.id);
      if (range && range.toString() === flag.matched_text && out.contains(range.startContainer)) continue;
      const found = findRange(out, flag);
      if (found) this.ranges.set(flag.id, found);
      else this.ranges.delete(flag.id);
      changed = true;
    }
    if (changed) paint(this, [...this.ranges.values()]);
  }
}

const HIGHLIGHT_NAME = "streamscope-flag";
const HIGHLIGHTS = typeof CSS !== "undefined" && CSS.highlights && typeof Highlight !== "undefined";
const painted = new Map(); // FlagPanel -> ranges (several run views may share a page)

function paint(panel, ranges) {
  if (ranges.length) painted.set(panel, ranges);
  else painted.delete(panel);
  const all = [...painted.values()].flat();
  if (all.length) CSS.highlights.set(HIGHLIGHT_NAME, new Highlight(...all));
  else CSS.highlights.delete(HIGHLIGHT_NAME);
}

/** A Range over the flag's matched text inside one of the output's text parts, or null. */
function findRange(out, flag) {
  for (const box of out.querySelectorAll("[data-text-part], .text")) {
    const nodes = [];
    const walker = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
    let text = "";
    for (let node = walker.nextNode(); node; node = walker.nextNode()) {
      nodes.push({ node, at: text.length });
      text += node.nodeValue;
    }
    const length = flag.matched_text.length;
    const at = typeof flag.start === "number" && text.substr(flag.start, length) === flag.matched_text
      ? flag.start : text.indexOf(flag.matched_text);
    if (at < 0) continue;
    const range = document.createRange();
    const [startNode, startOffset] = locate(nodes, at);
    const [endNode, endOffset] = locate(nodes, at + length);
    range.setStart(startNode, startOffset);
    range.setEnd(endNode, endOffset);
    return range;
  }
  return null;
}

function locate(nodes, position) {
  let index = nodes.length - 1;
  while (index > 0 && nodes[index].at > position) index -= 1;
  return [nodes[index].node, position - nodes[index].at];
}
