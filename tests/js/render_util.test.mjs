// Streaming JSON pretty-printing and URL vetting from render_util.js, in Node (no DOM needed).
import assert from "node:assert/strict";
import { test } from "node:test";

globalThis.location = { href: "http://app.test/runs/1/" };
const { imageDataUrl, prettyJson, safeUrl } = await import("../../static/js/render_util.js");

const SAMPLES = [
  { city: "Paris", unit: "celsius" },
  { query: "a, b: {c} [d] \"quoted\" \\ slash", limit: 10, nested: { list: [1, 2, { deep: [] }], empty: {} } },
  [],
  { a: [], b: {}, c: null, d: true, e: [[], [{}]] },
];

test("complete JSON is formatted like JSON.stringify(value, null, 2)", () => {
  for (const value of SAMPLES) {
    const result = prettyJson(JSON.stringify(value));
    assert.equal(result.state, "valid");
    assert.equal(result.text, JSON.stringify(value, null, 2));
  }
});

test("every prefix of streaming arguments is indented as a prefix of the final layout", () => {
  for (const value of SAMPLES) {
    const compact = JSON.stringify(value);
    const final = JSON.stringify(value, null, 2);
    for (let i = 1; i < compact.length; i++) {
      const { text, state } = prettyJson(compact.slice(0, i));
      if (state === "valid") continue;
      assert.equal(state, "partial");
      assert.ok(final.startsWith(text.trimEnd()), `prefix ${JSON.stringify(compact.slice(0, i))} gave ${JSON.stringify(text)}`);
    }
  }
});

test("spaced-out or invalid JSON is still shown, whole", () => {
  assert.equal(prettyJson("").state, "empty");
  const broken = prettyJson('{"a": 1,, "b"');
  assert.equal(broken.state, "partial");
  assert.ok(broken.text.includes('"b"'));
});

test("only http and https URLs become links", () => {
  assert.equal(safeUrl("https://example.com/a?b=1"), "https://example.com/a?b=1");
  assert.equal(safeUrl("/relative"), "http://app.test/relative");
  for (const bad of ["javascript:alert(1)", " JaVaScRiPt:alert(1)", "data:text/html,<script>1</script>", "vbscript:x", "", null, 42]) {
    assert.equal(safeUrl(bad), null, String(bad));
  }
});

test("images are only base64 data URLs of known formats", () => {
  assert.equal(imageDataUrl("iVBORw0KGgo=", "png"), "data:image/png;base64,iVBORw0KGgo=");
  assert.equal(imageDataUrl("AAAA", 'png" onerror="x'), "data:image/png;base64,AAAA");
  assert.equal(imageDataUrl('"><script>', "png"), null);
  assert.equal(imageDataUrl("", "png"), null);
});
