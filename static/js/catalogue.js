// The event catalogue the server embeds in each run page as JSON (#catalogue-data, from
// streams/protocol/catalogue.py: families with colours, and every known type's family, phase and
// flags). This module reads it once and looks types up in it; nothing here knows event types itself
// beyond the fallbacks for types the table does not list.

let embedded; // undefined until read; null when the page has none (or there is no page: Node)

/** The page's catalogue, or an empty one ({families: [], types: {}}) when there is none. */
export function catalogueData() {
  if (embedded === undefined) {
    const node = globalThis.document ? globalThis.document.getElementById("catalogue-data") : null;
    embedded = node ? JSON.parse(node.textContent) : null;
  }
  return embedded || { families: [], types: {} };
}

export function familyOf(type) {
  const cat = catalogueData();
  const known = cat.types && cat.types[type];
  if (known) return known.family || known;
  if (type.startsWith("streamscope.")) return "streamscope";
  if (type === "chat.completion.chunk") return "chat";
  if (type === "error") return "error";
  if (/^response\.(created|queued|in_progress|completed|failed|incomplete)$/.test(type)) return "lifecycle";
  return "unknown";
}

export function isDelta(type) {
  return type.endsWith(".delta") && type !== "response.audio.delta";
}

/** An event that ends a response (response.completed / .failed / .incomplete): the catalogue says. */
export function isTerminalEvent(type) {
  const known = catalogueData().types[type];
  return Boolean(known && known.terminal);
}
