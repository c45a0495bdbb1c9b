// The review queue page: the run under review in the shared run view (live over its websocket),
// and verdicts from the keyboard: A approve, F flag, R reject, N skip, / note, Esc leaves the note.

import { RunView } from "../runview.js";
import { RunSocket } from "../socket.js";

const filters = document.querySelector("[data-review-filters]");
if (filters) {
  for (const control of filters.querySelectorAll("select, input[type=checkbox]")) {
    control.addEventListener("change", () => filters.requestSubmit());
  }
}

const dataNode = document.getElementById("run-data");
const form = document.querySelector("[data-verdict-form]");

if (dataNode && form) {
  const run = JSON.parse(dataNode.textContent);
  const view = new RunView(document.querySelector("[data-runview]"), { filename: `run-${run.id}` });
  view.setStatus(run.status);
  if (run.error) view.setError(run.error);
  const socket = new RunSocket(run.id, {
    onEvents: (events) => view.addEvents(events),
    onStatus: (frame) => view.setStatus(frame.status, frame.metrics, frame.error),
    onConnection: (state) => view.setConnection(state),
    onFlag: (flag) => view.addFlag(flag),
  });
  socket.startWithHistory(run.event_count);

  const note = form.querySelector("[data-verdict-note]");
  const buttons = new Map([...form.querySelectorAll("[data-key]")].map((b) => [b.dataset.key, b]));
  let submitting = false;

  function decide(button) {
    if (submitting) return; // one verdict per page: a held-down key must not judge the next run
    submitting = true;
    socket.close();
    form.requestSubmit(button);
    for (const b of buttons.values()) b.disabled = true;
  }

  document.addEventListener("keydown", (e) => {
    if (e.defaultPrevented || e.ctrlKey || e.metaKey || e.altKey) return;
    const target = e.target;
    if (target instanceof HTMLElement && target.matches("input, textarea, select, [contenteditable]")) {
      if (e.key === "Escape") target.blur();
      return;
    }
    if (e.key === "/") {
      e.preventDefault();
      note.focus();
      return;
    }
    const button = buttons.get(e.key.toLowerCase());
    if (button) {
      e.preventDefault();
      decide(button);
    }
  });
  form.addEventListener("submit", () => { submitting = true; });
  // Back/forward cache: a page shown again must take keys again.
  window.addEventListener("pageshow", (e) => {
    if (!e.persisted) return;
    submitting = false;
    for (const b of buttons.values()) b.disabled = false;
  });
}

document.body.dataset.reviewReady = "1";
