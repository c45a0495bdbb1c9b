// The official openai node SDK against Streamscope's gateway, changed only in baseURL and apiKey.
// Usage: node gateway_check.mjs <gateway base URL> <Streamscope API token>
// Prints one JSON object: what each call returned or raised, for tests/gateway/test_node_sdk.py.
import OpenAI from "openai";

const [baseURL, apiKey] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 30_000 });
const FAST = { sim_tokens_per_s: "max" };

function failure(err) {
  return {
    name: err?.constructor?.name ?? typeof err,
    status: err?.status ?? null,
    code: err?.code ?? null,
    retryAfter: err?.headers?.get?.("retry-after") ?? null,
  };
}

async function attempt(fn) {
  try {
    return { ok: await fn() };
  } catch (err) {
    return { error: failure(err) };
  }
}

async function streamedResponse() {
  const stream = await client.responses.create({ model: "sim-text", input: "hello node", stream: true, metadata: FAST });
  const types = [];
  let text = "";
  let completed = null;
  for await (const event of stream) {
    types.push(event.type);
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.completed") completed = event.response;
  }
  const outputText = (completed?.output ?? [])
    .filter((item) => item.type === "message")
    .flatMap((item) => item.content.filter((part) => part.type === "output_text").map((part) => part.text))
    .join("");
  return { types, text, outputText, status: completed?.status ?? null };
}

async function wholeResponse() {
  const response = await client.responses.create({ model: "sim-text", input: "hello node", metadata: FAST });
  return { status: response.status, text: response.output_text };
}

async function chatStream() {
  const stream = await client.chat.completions.create({
    model: "sim-text", messages: [{ role: "user", content: "hello node" }], stream: true,
  });
  let text = "";
  let finish = null;
  for await (const chunk of stream) {
    const choice = chunk.choices[0];
    if (choice?.delta?.content) text += choice.delta.content;
    if (choice?.finish_reason) finish = choice.finish_reason;
  }
  return { text, finish };
}

async function failedStream() {
  const stream = await client.responses.create({ model: "sim-failed", input: "hi", stream: true, metadata: FAST });
  for await (const _event of stream) {
    // a failed stream ends with an error the SDK raises
  }
  return "ended without an error";
}

async function rateLimited() {
  return client.responses.create({ model: "sim-http-429", input: "hi", stream: true });
}

async function badToken() {
  const stranger = new OpenAI({ baseURL, apiKey: "ssk_not-a-token", maxRetries: 0 });
  return stranger.models.list();
}

async function models() {
  const ids = [];
  for await (const model of client.models.list()) ids.push(model.id);
  return ids;
}

const report = {
  stream: await attempt(streamedResponse),
  whole: await attempt(wholeResponse),
  chat: await attempt(chatStream),
  failed: await attempt(failedStream),
  rateLimited: await attempt(rateLimited),
  badToken: await attempt(badToken),
  models: await attempt(models),
};
process.stdout.write(JSON.stringify(report) + "\n");
