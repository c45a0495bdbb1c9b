// Stored events from the JSON API, in pages. Seqs are dense, so when the range is known the
// pages' offsets are too, and several are requested at once (a 20,000-event run: 4 pages in
// flight instead of one after another); pages are still delivered in order.

export const PAGE_SIZE = 5000; // the events API's largest page
const PAGES_IN_FLIGHT = 4;

export async function fetchPage(runId, after, limit = PAGE_SIZE) {
  const response = await fetch(`/api/runs/${runId}/events/?after=${after}&limit=${limit}`, {
    credentials: "same-origin",
  });
  if (!response.ok) throw new Error(`could not load the events of run ${runId}: HTTP ${response.status}`);
  return response.json();
}

// Events with after < seq <= upto, handed to onEvents page by page, in order and once each.
// Returns the last seq delivered (less than upto when the store has fewer events).
export async function fetchRange(runId, after, upto, onEvents) {
  let last = after;
  while (last < upto) {
    const pages = [];
    for (let from = last; from < upto && pages.length < PAGES_IN_FLIGHT; from += PAGE_SIZE) {
      pages.push(fetchPage(runId, from, Math.min(PAGE_SIZE, upto - from)));
    }
    const results = await Promise.allSettled(pages); // settle all: no request left unobserved
    let progressed = false;
    for (const result of results) {
      if (result.status === "rejected") throw result.reason;
      const events = result.value.events.filter((e) => e.seq > last && e.seq <= upto);
      if (!events.length) continue;
      if (progressed && events[0].seq !== last + 1) break; // a short page before this one: ask again
      last = events[events.length - 1].seq;
      onEvents(events);
      progressed = true;
    }
    if (!progressed) break;
  }
  return last;
}

// Every stored event of a run: `count` (the run's event_count, if known) lets the first pages
// go out together; whatever the store has beyond it follows page by page.
export async function fetchAllEvents(runId, count = 0) {
  const events = [];
  const add = (page) => {
    for (const e of page) events.push(e);
  };
  let last = count > 0 ? await fetchRange(runId, -1, count - 1, add) : -1;
  for (;;) {
    const page = await fetchPage(runId, last);
    const fresh = page.events.filter((e) => e.seq > last);
    add(fresh);
    if (page.next_after === null || !fresh.length) return events;
    last = fresh[fresh.length - 1].seq;
  }
}
