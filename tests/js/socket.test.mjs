// RunSocket's delivery rules, in Node with a fake WebSocket and fetch:
// exactly once, in order, gaps refilled from the API, reconnect with after=<last seq>.
import assert from "node:assert/strict";
import { test } from "node:test";

const sockets = [];
class FakeWebSocket {
  constructor(url) {
    this.url = url;
    sockets.push(this);
  }
  close(code = 1000) {
    this.onclose?.({ code });
  }
}
globalThis.WebSocket = FakeWebSocket;
globalThis.location = { protocol: "http:", host: "test" };
const stored = Array.from({ length: 50 }, (_, seq) => ({ seq, t: seq, type: "x", data: {} }));
const fetched = [];
globalThis.fetch = async (url) => {
  fetched.push(url);
  const params = new URL(url, "http://test").searchParams;
  const after = Number(params.get("after"));
  const limit = Number(params.get("limit"));
  const events = stored.filter((e) => e.seq > after).slice(0, limit);
  return { ok: true, json: async () => ({ events, next_after: null }) };
};
globalThis.setTimeout = (fn) => { fn(); return 0; };

const { RunSocket } = await import("../../static/js/socket.js");

function frame(socket, events) {
  socket.ws.onmessage({ data: JSON.stringify({ type: "events", events }) });
  return socket.queue;
}

test("overlaps are dropped, gaps are refilled, order is kept", async () => {
  const got = [];
  const socket = new RunSocket(7, { onEvents: (events) => got.push(...events.map((e) => e.seq)) });
  socket.start();
  assert.equal(sockets.at(-1).url, "ws://test/ws/runs/7/?after=-1");
  await frame(socket, stored.slice(0, 5));
  await frame(socket, stored.slice(3, 8)); // overlap
  await frame(socket, stored.slice(12, 15)); // gap 8..11
  assert.deepEqual(got, [...Array(15).keys()]);
  assert.ok(fetched.some((url) => url.includes("/api/runs/7/events/?after=7")));
});

test("an unexpected close reconnects after the last seq seen", async () => {
  const socket = new RunSocket(9, {});
  socket.start();
  await frame(socket, stored.slice(0, 4));
  socket.ws.onclose({ code: 1006 });
  await socket.queue;
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(sockets.at(-1).url, "ws://test/ws/runs/9/?after=3");
});

test("refused sockets do not retry", async () => {
  const states = [];
  const socket = new RunSocket(3, { onConnection: (s) => states.push(s) });
  socket.start();
  const count = sockets.length;
  socket.ws.onclose({ code: 4403 });
  assert.equal(sockets.length, count);
  assert.equal(states.at(-1), "refused");
});
