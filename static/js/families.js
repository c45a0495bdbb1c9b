// Event families for colouring and grouping. The table itself comes from the server
// (streams/catalogue.py, embedded as JSON); this module only looks types up in it.

let catalogue = null;

function loadCatalogue() {
  if (catalogue) return catalogue;
  const node = document.getElementById("catalogue-data");
  catalogue = node ? JSON.parse(node.textContent) : { types: {}, families: {} };
  return catalogue;
}

export function familyOf(type) {
  const cat = loadCatalogue();
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
