// The admin's "Test this rule" box: sends the rule as typed (saved or not) and a sample text to
// the server, then shows the sample with every match marked. Text only ever goes in via textContent.

import { csrfToken } from "../api.js";

const box = document.querySelector("[data-rule-test]");

function field(id) {
  return document.getElementById(id);
}

function showResult(sample, result) {
  const out = box.querySelector("[data-rule-test-result]");
  const summary = box.querySelector("[data-rule-test-summary]");
  out.replaceChildren();
  let position = 0;
  for (const match of result.matches) {
    if (match.start < position) continue;
    out.append(document.createTextNode(sample.slice(position, match.start)));
    const mark = document.createElement("mark");
    mark.textContent = sample.slice(match.start, match.end);
    out.append(mark);
    position = match.end;
  }
  out.append(document.createTextNode(sample.slice(position)));
  out.hidden = false;
  const n = result.matches.length;
  summary.textContent = `${n} match${n === 1 ? "" : "es"}${result.truncated ? " (sample cut to 20,000 characters)" : ""}`;
}

function showError(message) {
  const error = box.querySelector("[data-rule-test-error]");
  error.textContent = message || "";
  error.hidden = !message;
}

async function runTest() {
  const sample = box.querySelector("[data-rule-test-sample]").value;
  const body = new FormData();
  body.set("kind", field("id_kind").value);
  body.set("patterns", field("id_patterns").value);
  if (field("id_case_sensitive").checked) body.set("case_sensitive", "on");
  if (field("id_whole_words").checked) body.set("whole_words", "on");
  body.set("sample", sample);
  showError("");
  let response;
  try {
    response = await fetch(box.dataset.url, {
      method: "POST",
      body,
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
    });
  } catch (err) {
    showError(`The test could not reach the server: ${err.message}`);
    return;
  }
  const result = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (result.error) {
    box.querySelector("[data-rule-test-result]").hidden = true;
    box.querySelector("[data-rule-test-summary]").textContent = "";
    showError(result.error);
    return;
  }
  showResult(sample, result);
}

if (box) {
  box.querySelector("[data-rule-test-button]").addEventListener("click", runTest);
  box.querySelector("[data-rule-test-sample]").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      runTest();
    }
  });
}
