// Run statuses come from the server: the catalogue JSON each run page embeds (#catalogue-data)
// carries {statuses: {active, terminal}} from streams/models.py. The fallback below is only for a
// page without the catalogue and for Node's unit tests, which have no page.

import { catalogueData } from "./catalogue.js";

const FALLBACK = {
  active: ["queued", "streaming"],
  terminal: ["cancelled", "completed", "failed", "incomplete", "interrupted"],
};

function statuses() {
  const embedded = catalogueData().statuses;
  return embedded && Array.isArray(embedded.terminal) && Array.isArray(embedded.active) ? embedded : FALLBACK;
}

export function isTerminalStatus(status) {
  return statuses().terminal.includes(status);
}

export function isActiveStatus(status) {
  return statuses().active.includes(status);
}
