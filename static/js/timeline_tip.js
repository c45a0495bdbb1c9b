// The hover card of a timeline mark: type, seq, time and a short preview of the payload.
// Everything goes in with textContent (model output never becomes HTML).

export function fillTip(tip, record, when, pending) {
  const head = document.createElement("strong");
  head.textContent = record.type;
  const meta = document.createElement("span");
  meta.className = "muted";
  meta.textContent = `#${record.seq} · ${when}${pending ? " · not replayed yet" : ""}`;
  const lines = [head, meta];
  const preview = previewOf(record);
  if (preview) {
    const body = document.createElement("code");
    body.textContent = preview;
    lines.push(body);
  }
  tip.replaceChildren(...lines);
  tip.hidden = false;
}

export function previewOf(record) {
  const d = record.data;
  if (!d || typeof d !== "object") return d === undefined ? "" : String(d).slice(0, 160);
  const clip = (text, n = 140) => (text.length > n ? `${text.slice(0, n)}…` : text);
  if (typeof d.delta === "string") return clip(JSON.stringify(d.delta));
  if (d.item && typeof d.item === "object") return clip(`${d.item.type || "item"} ${d.item.id || ""} ${d.item.status || ""}`.trim());
  if (d.response && typeof d.response === "object") {
    const usage = d.response.usage ? ` · ${d.response.usage.output_tokens} output tokens` : "";
    return `response ${d.response.status || ""}${usage}`;
  }
  if (d.error) return clip(JSON.stringify(d.error));
  return clip(JSON.stringify(d), 160);
}
