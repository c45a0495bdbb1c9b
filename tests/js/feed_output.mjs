// Feed event records to the browser's OutputModel under Node and print what it rebuilt.
// stdin: {"catalogue": {...}, "runs": {"name": [{seq, t, type, data}, ...], ...}}
// stdout: {"name": {"output_text", "items": [{key, type, index, done}], "status", "errors", "unknown", "malformed"}}
// Used by tests/test_output_model.py to hold the JS model to streams/protocol/rebuild.py.

import { OutputModel } from "../../static/js/output_model.js";

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const { catalogue, runs } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const result = {};
for (const [name, records] of Object.entries(runs)) {
  const model = new OutputModel({ catalogue });
  for (const record of records) model.apply(record);
  result[name] = {
    output_text: model.outputText(),
    items: model.order.map((key) => {
      const item = model.items.get(key);
      return { key, type: item.type, index: item.index, done: Boolean(item.done) };
    }),
    status: model.status,
    errors: model.errors,
    unknown: Object.fromEntries(model.unknown),
    malformed: model.malformed.length,
  };
}
process.stdout.write(JSON.stringify(result));
