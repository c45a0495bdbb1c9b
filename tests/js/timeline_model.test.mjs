// The timeline's token deltas (its tokens/s chart and gaps) in Node: a chat run's chunks count too.
import assert from "node:assert/strict";
import { test } from "node:test";

const { TimelineModel } = await import("../../static/js/timeline_model.js");

const chunk = (seq, t, delta) => ({ seq, t, type: "chat.completion.chunk",
  data: { object: "chat.completion.chunk", choices: [{ index: 0, delta }] } });

test("a chat run's chunks with text are its token deltas; its role and end chunks are not", () => {
  const model = new TimelineModel();
  model.append([
    chunk(0, 100, { role: "assistant", content: "" }),
    chunk(1, 300, { content: "Hel" }),
    chunk(2, 320, { content: "lo" }),
    chunk(3, 350, { content: "!" }),
    { seq: 4, t: 360, type: "chat.completion.chunk", data: { choices: [{ index: 0, delta: {}, finish_reason: "stop" }] } },
  ]);
  assert.equal(model.tokens.n, 3);
  assert.equal(model.firstToken, 300);
  assert.equal(model.firstText, 300);
  assert.deepEqual(model.gaps, [20, 30]);
});

test("a Responses run's deltas are counted as before", () => {
  const model = new TimelineModel();
  model.append([
    { seq: 0, t: 5, type: "response.created", data: {} },
    { seq: 1, t: 40, type: "response.output_text.delta", data: { output_index: 0, delta: "a" } },
    { seq: 2, t: 45, type: "response.output_text.delta", data: { output_index: 0, delta: "b" } },
  ]);
  assert.equal(model.tokens.n, 2);
  assert.deepEqual(model.gaps, [5]);
});
