// Saving pictures: the charts draw through a small subset of the canvas 2D API, so the same
// drawing code paints a <canvas> (PNG via toBlob) or records an SVG document with SvgContext.

const XML = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&apos;" };
const escapeXml = (text) => String(text).replace(/[&<>"']/g, (c) => XML[c]);
const num = (value) => Math.round(value * 100) / 100;

let measurer = null;

export class SvgContext {
  constructor(width, height) {
    this.width = width;
    this.height = height;
    this.parts = [];
    this.state = { fillStyle: "#000", strokeStyle: "#000", lineWidth: 1, font: "12px sans-serif", textAlign: "start",
      textBaseline: "alphabetic", globalAlpha: 1, dash: [], dx: 0, dy: 0 };
    this.stack = [];
    this.path = "";
  }

  // Canvas-like properties.
  get fillStyle() { return this.state.fillStyle; } set fillStyle(v) { this.state.fillStyle = v; }
  get strokeStyle() { return this.state.strokeStyle; } set strokeStyle(v) { this.state.strokeStyle = v; }
  get lineWidth() { return this.state.lineWidth; } set lineWidth(v) { this.state.lineWidth = v; }
  get font() { return this.state.font; } set font(v) { this.state.font = v; }
  get textAlign() { return this.state.textAlign; } set textAlign(v) { this.state.textAlign = v; }
  get textBaseline() { return this.state.textBaseline; } set textBaseline(v) { this.state.textBaseline = v; }
  get globalAlpha() { return this.state.globalAlpha; } set globalAlpha(v) { this.state.globalAlpha = v; }

  save() { this.stack.push({ ...this.state, dash: [...this.state.dash] }); }
  restore() { if (this.stack.length) this.state = this.stack.pop(); }
  translate(x, y) { this.state.dx += x; this.state.dy += y; }
  setLineDash(dash) { this.state.dash = [...dash]; }
  setTransform() {}
  clearRect() {}

  measureText(text) {
    measurer ||= document.createElement("canvas").getContext("2d");
    measurer.font = this.state.font;
    return measurer.measureText(text);
  }

  x(value) { return num(value + this.state.dx); }
  y(value) { return num(value + this.state.dy); }
  alpha() { return this.state.globalAlpha < 1 ? ` opacity="${num(this.state.globalAlpha)}"` : ""; }

  fillRect(x, y, w, h) {
    this.parts.push(`<rect x="${this.x(x)}" y="${this.y(y)}" width="${num(w)}" height="${num(h)}" fill="${escapeXml(this.state.fillStyle)}"${this.alpha()}/>`);
  }

  strokeRect(x, y, w, h) {
    this.parts.push(`<rect x="${this.x(x)}" y="${this.y(y)}" width="${num(w)}" height="${num(h)}" fill="none" stroke="${escapeXml(this.state.strokeStyle)}" stroke-width="${num(this.state.lineWidth)}"${this.alpha()}/>`);
  }

  beginPath() { this.path = ""; }
  moveTo(x, y) { this.path += `M${this.x(x)} ${this.y(y)}`; }
  lineTo(x, y) { this.path += `L${this.x(x)} ${this.y(y)}`; }
  closePath() { this.path += "Z"; }
  rect(x, y, w, h) { this.path += `M${this.x(x)} ${this.y(y)}h${num(w)}v${num(h)}h${num(-w)}Z`; }
  arc(x, y, r) {
    this.path += `M${this.x(x - r)} ${this.y(y)}a${num(r)} ${num(r)} 0 1 0 ${num(2 * r)} 0a${num(r)} ${num(r)} 0 1 0 ${num(-2 * r)} 0`;
  }

  fill() {
    if (this.path) this.parts.push(`<path d="${this.path}" fill="${escapeXml(this.state.fillStyle)}"${this.alpha()}/>`);
  }

  stroke() {
    if (!this.path) return;
    const dash = this.state.dash.length ? ` stroke-dasharray="${this.state.dash.join(" ")}"` : "";
    this.parts.push(`<path d="${this.path}" fill="none" stroke="${escapeXml(this.state.strokeStyle)}" stroke-width="${num(this.state.lineWidth)}"${dash}${this.alpha()}/>`);
  }

  fillText(text, x, y) {
    const anchor = { center: "middle", right: "end", end: "end" }[this.state.textAlign] || "start";
    const baseline = { middle: "central", top: "hanging", hanging: "hanging", bottom: "text-after-edge" }[this.state.textBaseline] || "alphabetic";
    const match = /(\d+(?:\.\d+)?)px\s+(.*)$/.exec(this.state.font);
    const weight = /\b(bold|[6-9]00)\b/.test(this.state.font) ? ' font-weight="bold"' : "";
    const size = match ? match[1] : "12";
    const family = match ? match[2] : "sans-serif";
    this.parts.push(`<text x="${this.x(x)}" y="${this.y(y)}" font-size="${size}" font-family="${escapeXml(family)}"${weight} text-anchor="${anchor}" dominant-baseline="${baseline}" fill="${escapeXml(this.state.fillStyle)}"${this.alpha()}>${escapeXml(text)}</text>`);
  }

  toString() {
    return `<svg xmlns="http://www.w3.org/2000/svg" width="${this.width}" height="${this.height}" viewBox="0 0 ${this.width} ${this.height}">${this.parts.join("")}</svg>`;
  }
}

function download(blob, filename) {
  const url = URL.createObjectURL(blob);
  const link = document.createElement("a");
  link.href = url;
  link.download = filename;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// paint(ctx) draws a width x height picture; saved as PNG (at the screen's pixel ratio) or SVG.
export function exportPicture(format, width, height, paint, filename) {
  if (format === "svg") {
    const ctx = new SvgContext(width, height);
    paint(ctx);
    download(new Blob([ctx.toString()], { type: "image/svg+xml" }), `${filename}.svg`);
    return;
  }
  const ratio = Math.max(1, window.devicePixelRatio || 1);
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.scale(ratio, ratio);
  paint(ctx);
  canvas.toBlob((blob) => { if (blob) download(blob, `${filename}.png`); }, "image/png");
}
