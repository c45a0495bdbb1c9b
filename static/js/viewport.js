// The visible window of a time axis, shared by every timeline (and chart) that shows it: compare
// stacks several timelines on one Viewport so zoom and pan move them together.

export class Viewport {
  constructor() {
    this.start = 0;
    this.end = 1000;
    this.fit = true;
    this.sources = new Set();
    this.listeners = new Set();
  }

  extent() {
    let lo = 0;
    let hi = 0;
    let live = false;
    let untimed = false;
    for (const source of this.sources) {
      const e = source.extent();
      lo = Math.min(lo, e.lo);
      hi = Math.max(hi, e.hi);
      live = live || e.live;
      untimed = untimed || e.untimed;
    }
    return { lo, hi, live, untimed };
  }

  // In fit mode the axis shows everything; while live it grows in steps so marks rarely rescale.
  refit() {
    if (!this.fit) return;
    const { lo, hi, live, untimed } = this.extent();
    const minSpan = untimed ? 10 : 100;
    let end = this.end;
    if (live) {
      if (hi > this.end - (this.end - this.start) * 0.02 || this.start !== lo) end = lo + Math.max(minSpan, (hi - lo) * 1.3);
    } else {
      end = lo + Math.max(minSpan, (hi - lo) * 1.02 + (untimed ? 1 : 0));
    }
    if (end !== this.end || lo !== this.start) {
      this.start = lo;
      this.end = end;
      this.notify();
    }
  }

  set(start, end) {
    const { lo, hi, untimed } = this.extent();
    const minSpan = untimed ? 4 : 0.5;
    const span = Math.max(minSpan, end - start);
    const maxSpan = Math.max(hi - lo, minSpan) * 1.5;
    const s = Math.min(span, maxSpan);
    const center = (start + end) / 2;
    this.start = Math.max(lo - s * 0.25, Math.min(center - s / 2, hi + s * 0.25 - s));
    this.end = this.start + s;
    this.fit = false;
    this.notify();
  }

  zoom(factor, anchor = (this.start + this.end) / 2) {
    this.set(anchor - (anchor - this.start) * factor, anchor + (this.end - anchor) * factor);
  }

  pan(delta) { this.set(this.start + delta, this.end + delta); }

  reset() {
    this.fit = true;
    this.refit();
    this.notify();
  }

  notify() { for (const listener of this.listeners) listener(); }
}
