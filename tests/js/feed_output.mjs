// Feed event records to the browser's OutputModel under Node and print what it rebuilt.
// stdin: {"catalogue": {...}, "runs": {"name": [{seq, t, type, data}, ...], ...}}
// stdout: {"name": {"output_text", "items": [{key, type, index, done, name, arguments, text}], "status", "errors",
//          "usage", "outcome", "unknown", "malformed"}}
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
      const text = (item.content || []).map((part) => (part && part.type === "output_text" ? part.text : "")).join("");
      const name = item.data && typeof item.data.name === "string" ? item.data.name : null;
      return { key, type: item.type, index: item.index, done: Boolean(item.done), name, arguments: item.arguments ?? null, text };
    }),
    status: model.status,
    errors: model.errors,
    usage: model.response && model.response.usage ? model.response.usage : null,
    outcome: model.items.has("~outcome") ? { response_status: model.response ? model.response.status ?? null : null } : null,
    unknown: Object.fromEntries(model.unknown),
    malformed: model.malformed.length,
  };
}
process.stdout.write(JSON.stringify(result));
