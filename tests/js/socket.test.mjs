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
let stored = Array.from({ length: 50 }, (_, seq) => ({ seq, t: seq, type: "x", data: {} }));
const fetched = [];
let failFetches = 0;
globalThis.fetch = async (url) => {
  fetched.push(url);
  if (failFetches > 0) {
    failFetches -= 1;
    return { ok: false, status: 503, json: async () => ({}) };
  }
  const params = new URL(url, "http://test").searchParams;
  const after = Number(params.get("after"));
  const limit = Number(params.get("limit"));
  const rest = stored.filter((e) => e.seq > after);
  const events = rest.slice(0, limit);
  const nextAfter = rest.length > limit ? events[events.length - 1].seq : null;
  return { ok: true, json: async () => ({ events, next_after: nextAfter }) };
};
globalThis.setTimeout = (fn) => { fn(); return 0; };

const { RunSocket } = await import("../../static/js/socket.js");
const { fetchAllEvents } = await import("../../static/js/event_pages.js");

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

test("a page that knows the stored count loads it through the API while the websocket opens after it", async () => {
  stored = Array.from({ length: 12010 }, (_, seq) => ({ seq, t: seq, type: "x", data: {} }));
  fetched.length = 0;
  const got = [];
  const socket = new RunSocket(11, { onEvents: (events) => got.push(...events.map((e) => e.seq)) });
  socket.startWithHistory(12000);
  assert.equal(sockets.at(-1).url, "ws://test/ws/runs/11/?after=11999");
  // Three pages asked for at once, before any of them answered.
  assert.deepEqual(fetched, [0, 1, 2].map((i) => `/api/runs/11/events/?after=${i * 5000 - 1}&limit=${Math.min(5000, 12000 - i * 5000)}`));
  // A live frame that arrives while the history loads waits for it.
  await frame(socket, stored.slice(12000, 12010));
  assert.deepEqual(got, [...Array(12010).keys()]);
  stored = stored.slice(0, 50);
});

test("when the history cannot be fetched, the live connection's gap refill fills it in", async () => {
  stored = Array.from({ length: 30 }, (_, seq) => ({ seq, t: seq, type: "x", data: {} }));
  failFetches = 1;
  const got = [];
  const socket = new RunSocket(12, { onEvents: (events) => got.push(...events.map((e) => e.seq)) });
  const warn = console.warn;
  console.warn = () => {};
  try {
    socket.startWithHistory(20);
    await frame(socket, stored.slice(20, 30));
  } finally {
    console.warn = warn;
  }
  assert.deepEqual(got, [...Array(30).keys()]);
  stored = stored.slice(0, 50);
});

test("no stored events: just the websocket, from the start", async () => {
  const socket = new RunSocket(13, {});
  socket.startWithHistory(0);
  assert.equal(sockets.at(-1).url, "ws://test/ws/runs/13/?after=-1");
});

test("fetchAllEvents: pipelined up to the known count, then whatever the store has beyond it", async () => {
  stored = Array.from({ length: 12010 }, (_, seq) => ({ seq, t: seq, type: "x", data: {} }));
  for (const count of [12000, 0, 20000]) {
    fetched.length = 0;
    const events = await fetchAllEvents(5, count);
    assert.deepEqual(events.map((e) => e.seq), [...Array(12010).keys()], `count ${count}`);
  }
  stored = stored.slice(0, 50);
});
