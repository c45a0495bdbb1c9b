// Painting one timeline onto a canvas-like context (canvas or SvgContext): ruler, lanes, one mark
// per event coloured by family, markers for first event / first token / end, replay cursor.
// Cost is bounded by pixels, not events: at most one mark per lane, pixel column and family.

import { FONT, drawTimeAxis, theme } from "./charts.js";
import { fmtMs } from "./format.js";

// Room for lane labels on the left; narrower on small screens.
export function gutterFor(width) {
  return width < 640 ? 88 : 128;
}
export const RULER = 26;
export const FOOT = 30;

export function laneHeight(laneCount) {
  return laneCount > 14 ? 12 : laneCount > 8 ? 16 : 22;
}

export function timelineHeight(laneCount) {
  return RULER + laneCount * laneHeight(laneCount) + FOOT;
}

let occupancy = new Int32Array(0);

// state: { model, start, end, offset, untimed, shown, cursor, hover, selected, colours, title }
export function paintTimeline(ctx, width, height, state) {
  const th = theme();
  const { model, start, end } = state;
  const lanes = model.lanes.length;
  const laneH = laneHeight(lanes);
  const gutter = gutterFor(width);
  const plotW = Math.max(10, width - gutter - 10);
  const span = Math.max(end - start, 1e-6);
  const px = (x) => gutter + ((x - start) / span) * plotW;
  ctx.save();
  ctx.fillStyle = th.panel;
  ctx.fillRect(0, 0, width, height);
  // Lane stripes and labels.
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  for (let l = 0; l < lanes; l++) {
    const y = RULER + l * laneH;
    if (l % 2 === 0) {
      ctx.fillStyle = th.stripe;
      ctx.fillRect(0, y, width, laneH);
    }
    const lane = model.lanes[l];
    ctx.textAlign = "right";
    ctx.fillStyle = l === 0 ? th.muted : th.text;
    const label = lane.index !== null && lane.index !== undefined ? `${lane.label} #${lane.index}` : lane.label;
    const room = gutter < 128 ? 13 : 20;
    ctx.fillText(label.length > room ? `${label.slice(0, room - 1)}…` : label, gutter - 8, y + laneH / 2);
  }
  if (state.title) {
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    ctx.fillStyle = th.text;
    ctx.font = `600 ${FONT}`;
    ctx.fillText(state.title.length > 22 ? `${state.title.slice(0, 21)}…` : state.title, 6, RULER / 2 - 2);
    ctx.font = FONT;
  }
  const lanesBottom = RULER + lanes * laneH;
  drawTimeAxis(ctx, { x0: gutter, width: plotW, y: RULER - 2, height: lanesBottom - RULER + 2, start, end,
    untimed: state.untimed, th });
  // Marks, batched per family; events not yet replayed are drawn faint.
  const n = model.count;
  const shown = state.shown === undefined || state.shown === null ? n : Math.min(state.shown, n);
  const cells = lanes * Math.ceil(plotW + 1);
  if (occupancy.length < cells) occupancy = new Int32Array(cells * 2);
  const families = model.families.length;
  const buckets = [];
  for (let f = 0; f < families * 2; f++) buckets.push([]);
  for (const [from, to, faint] of [[0, shown, 0], [shown, n, 1]]) {
    occupancy.fill(0, 0, cells);
    for (let i = from; i < to; i++) {
      const x = (state.untimed ? i : model.t.a[i]) - state.offset;
      if (x < start || x > end) continue;
      const col = Math.round(((x - start) / span) * plotW);
      const lane = model.lane.a[i];
      const fam = model.fam.a[i];
      const cell = lane * Math.ceil(plotW + 1) + col;
      const bit = 1 << (fam & 31);
      if (occupancy[cell] & bit) continue;
      occupancy[cell] |= bit;
      buckets[fam * 2 + faint].push(col, lane);
    }
  }
  const markH = Math.max(6, laneH - 8);
  for (let f = 0; f < families * 2; f++) {
    const list = buckets[f];
    if (!list.length) continue;
    ctx.fillStyle = state.colours[f >> 1] || th.muted;
    ctx.globalAlpha = f & 1 ? 0.3 : 1;
    ctx.beginPath();
    for (let k = 0; k < list.length; k += 2) {
      const lane = list[k + 1];
      const tall = lane === 0 ? 2 : 0;
      ctx.rect(gutter + list[k] - 1, RULER + lane * laneH + (laneH - markH) / 2 - tall, 2 + tall / 2, markH + 2 * tall);
    }
    ctx.fill();
  }
  ctx.globalAlpha = 1;
  if (!n) {
    ctx.fillStyle = th.muted;
    ctx.textAlign = "left";
    ctx.fillText("Each event appears here as a mark the moment it arrives.", gutter + 10, RULER + laneH / 2);
  }
  paintMarkers(ctx, state, { px, lanesBottom, width, th, start, end, gutter });
  for (const [index, tone] of [[state.selected, th.accent], [state.hover, th.text]]) {
    if (index === null || index === undefined || index < 0 || index >= n) continue;
    const x = (state.untimed ? index : model.t.a[index]) - state.offset;
    if (x < start || x > end) continue;
    const y = RULER + model.lane.a[index] * laneH;
    ctx.strokeStyle = tone;
    ctx.lineWidth = 2;
    ctx.setLineDash([]);
    ctx.strokeRect(px(x) - 4, y + 1, 8, laneH - 2);
  }
  ctx.restore();
}

function paintMarkers(ctx, state, { px, lanesBottom, width, th, start, end, gutter }) {
  const { model } = state;
  const toX = (t) => (state.untimed ? null : t - state.offset);
  const markers = [];
  if (model.firstEvent !== null) markers.push(["first event", toX(model.firstEvent), th.muted, [3, 3], model.firstEvent]);
  if (model.firstCreated !== null) markers.push(["created", toX(model.firstCreated), th.muted, [1, 3], model.firstCreated]);
  if (model.firstReasoning !== null) markers.push(["reasoning", toX(model.firstReasoning), th.warn, [4, 2], model.firstReasoning]);
  if (model.firstArgs !== null) markers.push(["tool args", toX(model.firstArgs), th.accent, [4, 2], model.firstArgs]);
  if (model.firstText !== null) markers.push(["first token", toX(model.firstText), th.ok, [4, 2], model.firstText]);
  if (state.endMs !== null && state.endMs !== undefined) markers.push(["end", toX(state.endMs), th.text, [], state.endMs]);
  if (state.untimed) {
    markers.length = 0;
    if (model.count) markers.push(["end", model.count - 1 - state.offset, th.text, [], null]);
  }
  const rowRight = [-Infinity, -Infinity];
  ctx.font = FONT;
  ctx.textBaseline = "middle";
  for (const [label, x, colour, dash, value] of markers) {
    if (x === null || x < start || x > end) continue;
    const at = px(x);
    ctx.strokeStyle = colour;
    ctx.lineWidth = 1.5;
    ctx.setLineDash(dash);
    ctx.beginPath();
    ctx.moveTo(at, RULER);
    ctx.lineTo(at, lanesBottom + 3);
    ctx.stroke();
    const text = value === null ? label : `${label} ${fmtMs(value)}`;
    const w = ctx.measureText(text).width;
    // Labels that would overlap go to a second row.
    let left = Math.min(Math.max(at - w / 2, gutter), width - w - 4);
    let row = rowRight.findIndex((right) => left >= right + 6);
    if (row < 0) {
      row = rowRight[0] <= rowRight[1] ? 0 : 1;
      left = Math.min(rowRight[row] + 6, width - w - 2);
    }
    ctx.fillStyle = colour;
    ctx.textAlign = "left";
    ctx.fillText(text, left, lanesBottom + 10 + row * 12);
    rowRight[row] = left + w;
  }
  ctx.setLineDash([]);
  if (state.cursor !== null && state.cursor !== undefined) {
    const x = state.untimed ? state.cursorIndex - 1 - state.offset : state.cursor - state.offset;
    if (x >= start && x <= end) {
      const at = px(x);
      ctx.fillStyle = th.accent;
      ctx.fillRect(at - 1, RULER - 6, 2, lanesBottom - RULER + 6);
      ctx.beginPath();
      ctx.moveTo(at - 6, RULER - 12);
      ctx.lineTo(at + 6, RULER - 12);
      ctx.lineTo(at, RULER - 4);
      ctx.closePath();
      ctx.fill();
    }
  }
}
