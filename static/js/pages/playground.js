// The playground: pick provider and model, send a prompt, watch the run live on this page.

import { apiPost } from "../api.js";
import { FanOut } from "../fanout.js";
import { RunView } from "../runview.js";
import { RunSocket } from "../socket.js";

const providers = JSON.parse(document.getElementById("providers-data").textContent);
const form = document.querySelector("[data-prompt-form]");
const providerSelect = form.querySelector("[data-provider]");
const modelSelect = form.querySelector("[data-model]");
const input = form.querySelector("[data-input]");
const sendButton = form.querySelector("[data-send]");
const stopButton = form.querySelector("[data-stop]");
const formError = form.querySelector("[data-form-error]");
const runLink = form.querySelector("[data-run-link]");
const view = new RunView(document.querySelector("[data-runview]"));

let current = null; // { id, socket }

for (const provider of providers) {
  const option = new Option(provider.label, provider.name);
  providerSelect.append(option);
}

function fillModels() {
  const provider = providers.find((p) => p.name === providerSelect.value);
  modelSelect.replaceChildren(...(provider ? provider.models : []).map((m) => new Option(m, m)));
  const isSim = providerSelect.value.startsWith("simulator");
  for (const node of form.querySelectorAll("[data-sim-only]")) node.hidden = !isSim;
}
providerSelect.addEventListener("change", fillModels);
fillModels();

function showFormError(message) {
  formError.textContent = message || "";
  formError.hidden = !message;
}

function collectRequest() {
  const data = new FormData(form);
  const params = {};
  const temperature = data.get("temperature");
  if (temperature !== "") params.temperature = Number(temperature);
  const maxTokens = data.get("max_output_tokens");
  if (maxTokens !== "") params.max_output_tokens = Number(maxTokens);
  if (providerSelect.value.startsWith("simulator")) {
    const metadata = {};
    for (const key of ["sim_tokens_per_s", "sim_seed"]) {
      const value = data.get(key);
      if (value !== "") metadata[key] = String(value);
    }
    if (Object.keys(metadata).length) params.metadata = metadata;
  }
  return {
    provider: providerSelect.value,
    model: modelSelect.value,
    input: data.get("input"),
    instructions: data.get("instructions") || "",
    params,
  };
}

function setRunning(running) {
  stopButton.disabled = !running;
  sendButton.disabled = false;
}

async function send() {
  showFormError("");
  const request = collectRequest();
  if (!request.input.trim()) {
    showFormError("Write a prompt first.");
    input.focus();
    return;
  }
  sendButton.disabled = true;
  let created;
  try {
    created = await apiPost("/api/runs/", request);
  } catch (err) {
    showFormError(err.message);
    sendButton.disabled = false;
    return;
  }
  if (current) current.socket.close();
  view.reset();
  view.setStatus(created.status);
  runLink.href = created.url;
  runLink.textContent = `Run #${created.id} ↗`;
  runLink.hidden = false;
  const socket = new RunSocket(created.id, {
    onEvents: (events) => view.addEvents(events),
    onStatus: (frame) => {
      view.setStatus(frame.status, frame.metrics, frame.error);
      if (view.isTerminal()) setRunning(false);
    },
    onConnection: (state) => view.setConnection(state),
    onFlag: (flag) => view.addFlag(flag),
  });
  current = { id: created.id, socket };
  setRunning(true);
  socket.start();
}

async function stop() {
  if (!current || view.isTerminal()) return;
  stopButton.disabled = true;
  try {
    await apiPost(`/api/runs/${current.id}/cancel/`);
  } catch (err) {
    showFormError(`Could not stop the run: ${err.message}`);
  }
}

const fanout = new FanOut(form.querySelector("[data-fanout]"), providers, collectRequest, showFormError);

form.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});
stopButton.addEventListener("click", stop);
document.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
    e.preventDefault();
    if (fanout.isOpen()) fanout.send();
    else send();
  } else if (e.key === "Escape") {
    stop();
  }
});
