// The live wall: the runs list keeps itself current over /ws/wall/ (dashboard/wall.py).
// Rows on the page get their status, event count and figures updated in place; runs that now
// belong on this page but are not shown yet are announced with a link that reloads it.

const CELLS = { ttfb_ms: 4, ttft_ms: 5, duration_ms: 6, event_count: 7, tokens_per_s: 8 };

function ms(value) {
  return value === null || value === undefined ? "–" : `${Math.round(value)} ms`;
}

function update(row, run) {
  const badge = row.querySelector(".status-badge");
  if (badge && badge.textContent !== run.status) {
    badge.textContent = run.status;
    badge.className = `status-badge status-${run.status}`;
  }
  const cells = row.children;
  const set = (name, text) => {
    const cell = cells[CELLS[name]];
    if (cell && cell.textContent !== text) cell.textContent = text;
  };
  set("ttfb_ms", ms(run.ttfb_ms));
  set("ttft_ms", ms(run.ttft_ms));
  set("duration_ms", ms(run.duration_ms));
  set("event_count", String(run.event_count ?? 0));
  set("tokens_per_s", run.tokens_per_s ? run.tokens_per_s.toFixed(1) : "–");
}

function banner(table) {
  let note = document.querySelector("[data-wall-new]");
  if (!note) {
    note = document.createElement("p");
    note.className = "wall-new";
    note.setAttribute("role", "status");
    note.dataset.wallNew = "";
    const link = document.createElement("a");
    link.href = location.href;
    note.append(link);
    (table ? table.parentElement : document.querySelector("main")).prepend(note);
  }
  return note;
}

function connect(table, delay = 1000) {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws/wall/${location.search}`);
  socket.addEventListener("message", (message) => {
    const data = JSON.parse(message.data);
    if (data.type !== "runs") return;
    for (const run of data.runs) {
      const row = document.querySelector(`[data-run-row="${run.id}"]`);
      if (row) update(row, run);
    }
    const shown = new Set([...document.querySelectorAll("[data-run-row]")].map((r) => Number(r.dataset.runRow)));
    const missing = data.ids.filter((id) => !shown.has(id)).length;
    if (missing) {
      banner(table).firstChild.textContent = `${missing} new run${missing === 1 ? "" : "s"}: show`;
    }
  });
  socket.addEventListener("close", (event) => {
    if (event.code >= 4400 && event.code < 4500) return; // refused: logged out or a bad filter
    setTimeout(() => connect(table, Math.min(delay * 2, 30000)), delay);
  });
}

/** Keep the rows of ``table`` (the runs page's) current. Only the first page follows live: a later
 * page (?cursor=) is a snapshot by design. */
export function followRuns(table) {
  if (new URLSearchParams(location.search).has("cursor")) return;
  connect(table);
}
