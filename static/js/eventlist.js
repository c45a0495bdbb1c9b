// A virtualised list of event records: only the rows in view exist in the DOM, so a run of
// 200,000 events scrolls as lightly as one of 20.

import { familyOf } from "./catalogue.js";

const ROW = 22;

export class EventList {
  constructor(root, { onSelect } = {}) {
    this.root = root;
    this.viewport = root.querySelector("[data-viewport]");
    this.spacer = root.querySelector("[data-spacer]");
    this.events = [];
    this.selected = -1;
    this.onSelect = onSelect || (() => {});
    this.follow = true;
    this.rows = new Map();
    this.viewport.addEventListener("scroll", () => {
      const bottom = this.viewport.scrollHeight - this.viewport.clientHeight - this.viewport.scrollTop;
      this.follow = bottom < ROW * 2;
      this.draw();
    });
    this.viewport.addEventListener("click", (e) => {
      const row = e.target.closest("[data-index]");
      if (row) this.select(Number(row.dataset.index));
    });
    root.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" || e.key === "j") { this.select(Math.min(this.events.length - 1, this.selected + 1)); e.preventDefault(); }
      if (e.key === "ArrowUp" || e.key === "k") { this.select(Math.max(0, this.selected - 1)); e.preventDefault(); }
    });
  }

  clear() {
    this.events = [];
    this.selected = -1;
    this.follow = true;
    for (const row of this.rows.values()) row.remove();
    this.rows.clear();
    this.draw();
  }

  append(events) {
    for (const e of events) this.events.push(e);
    this.spacer.style.height = `${this.events.length * ROW}px`;
    if (this.follow) this.viewport.scrollTop = this.viewport.scrollHeight;
    this.draw();
  }

  select(index) {
    if (index < 0 || index >= this.events.length) return;
    this.selected = index;
    const top = index * ROW;
    if (top < this.viewport.scrollTop || top > this.viewport.scrollTop + this.viewport.clientHeight - ROW) {
      this.viewport.scrollTop = top - this.viewport.clientHeight / 2;
    }
    for (const [i, row] of this.rows) row.classList.toggle("selected", i === index);
    this.onSelect(this.events[index]);
    this.draw();
  }

  selectSeq(seq) {
    const index = this.events.findIndex((e) => e.seq === seq);
    if (index >= 0) this.select(index);
  }

  draw() {
    const height = this.viewport.clientHeight || 400;
    const first = Math.max(0, Math.floor(this.viewport.scrollTop / ROW) - 5);
    const last = Math.min(this.events.length - 1, Math.ceil((this.viewport.scrollTop + height) / ROW) + 5);
    for (const [i, row] of this.rows) {
      if (i < first || i > last) { row.remove(); this.rows.delete(i); }
    }
    for (let i = first; i <= last; i++) {
      if (this.rows.has(i)) continue;
      const e = this.events[i];
      const row = document.createElement("div");
      row.className = `event-row fam-${familyOf(e.type)}${e.type === "streamscope.malformed" ? " malformed" : ""}`;
      if (i === this.selected) row.classList.add("selected");
      row.dataset.index = i;
      row.setAttribute("role", "option");
      row.style.top = `${i * ROW}px`;
      const seq = document.createElement("span");
      seq.textContent = e.seq;
      const t = document.createElement("span");
      t.className = "num";
      t.textContent = e.t.toFixed(1);
      const type = document.createElement("span");
      type.className = "etype";
      type.textContent = e.type;
      row.append(seq, t, type);
      this.viewport.appendChild(row);
      this.rows.set(i, row);
    }
  }
}
