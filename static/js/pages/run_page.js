// The run page: the stored run, caught up from the log and then followed live.

import { apiPost } from "../api.js";
import { RunView } from "../runview.js";
import { RunSocket } from "../socket.js";

const run = JSON.parse(document.getElementById("run-data").textContent);
const view = new RunView(document.querySelector("[data-runview]"));
const stopButton = document.querySelector("[data-stop]");

view.setStatus(run.status);
if (run.error) view.setError(run.error);

const socket = new RunSocket(run.id, {
  onEvents: (events) => view.addEvents(events),
  onStatus: (frame) => {
    view.setStatus(frame.status, frame.metrics, frame.error);
    if (view.isTerminal() && stopButton) stopButton.disabled = true;
  },
  onConnection: (state) => view.setConnection(state),
  onFlag: (flag) => view.addFlag(flag),
});
socket.startWithHistory(run.event_count);

async function stop() {
  if (view.isTerminal() || !stopButton || stopButton.disabled) return;
  stopButton.disabled = true;
  try {
    await apiPost(`/api/runs/${run.id}/cancel/`);
  } catch (err) {
    view.setError({ message: `Could not stop the run: ${err.message}` });
  }
}

if (stopButton) stopButton.addEventListener("click", stop);
document.addEventListener("keydown", (e) => {
  if (e.key === "Escape") stop();
});
