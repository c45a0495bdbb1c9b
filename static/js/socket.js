// Watching a run over its websocket: exactly-once, in-order delivery of event records,
// with automatic reconnection (resuming after the last seq seen) and gap refill from the API.

import { fetchRange } from "./event_pages.js";
import { isActiveStatus } from "./run_status.js";

const RETRY_MS = [250, 500, 1000, 2000, 4000, 8000];

export class RunSocket {
  constructor(runId, { after = -1, onEvents, onStatus, onConnection, onFlag } = {}) {
    this.runId = runId;
    this.lastSeq = after;
    this.onEvents = onEvents || (() => {});
    this.onStatus = onStatus || (() => {});
    this.onConnection = onConnection || (() => {});
    this.onFlag = onFlag || (() => {}); // moderation flags: {"type": "flag", "flag": {...}}
    this.finished = false;
    this.closedByUs = false;
    this.attempt = 0;
    this.queue = Promise.resolve();
    this.ws = null;
  }

  // Open the websocket; `after` is the last seq the server need not send (default: the last seen).
  start(after = this.lastSeq) {
    this.closedByUs = false;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/ws/runs/${this.runId}/?after=${after}`;
    const ws = new WebSocket(url);
    this.ws = ws;
    this.onConnection(this.attempt ? "reconnecting" : "connecting");
    ws.onopen = () => {
      this.attempt = 0;
      this.onConnection("live");
    };
    ws.onmessage = (message) => {
      let frame;
      try {
        frame = JSON.parse(message.data);
      } catch (err) {
        console.warn("unreadable frame", err);
        return;
      }
      // Frames are handled strictly one after another, gap refills included.
      this.queue = this.queue.then(() => this.handle(frame)).catch((err) => console.error(err));
    };
    ws.onclose = (event) => {
      if (this.ws !== ws) return;
      if (this.closedByUs) return;
      if (event.code === 4401 || event.code === 4403) {
        this.onConnection("refused");
        return;
      }
      if (this.finished) {
        this.onConnection("done");
        return;
      }
      const delay = RETRY_MS[Math.min(this.attempt, RETRY_MS.length - 1)];
      this.attempt += 1;
      this.onConnection("reconnecting");
      setTimeout(() => this.queue.then(() => this.start()), delay);
    };
  }

  // A page that knows the run already has `count` stored events: fetch those through the API
  // (pipelined pages, event_pages.js: faster than the websocket's backlog for a 20,000-event run) while the websocket opens after them; its frames wait until the history is in.
  startWithHistory(count) {
    if (!(count > 0)) {
      this.start();
      return;
    }
    const history = this.refill(count - 1).catch((err) => {
      // The websocket's gap refill fetches whatever is still missing.
      console.warn("could not load the stored events; the live connection will fill them in", err);
    });
    this.queue = this.queue.then(() => history);
    this.start(count - 1);
  }

  close() {
    this.closedByUs = true;
    if (this.ws) this.ws.close(1000);
  }

  async handle(frame) {
    if (frame.type === "events") {
      await this.deliver(frame.events);
    } else if (frame.type === "flag") {
      this.onFlag(frame.flag);
    } else if (frame.type === "status") {
      if (frame.last_seq !== null && frame.last_seq !== undefined && frame.last_seq > this.lastSeq) {
        await this.refill(frame.last_seq);
      }
      const terminal = !isActiveStatus(frame.status);
      if (terminal) this.finished = true;
      this.onStatus(frame);
      if (terminal) this.onConnection("done");
    }
  }

  async deliver(events) {
    if (!events.length) return;
    const first = events[0].seq;
    if (first > this.lastSeq + 1) await this.refill(first - 1);
    const fresh = events.filter((e) => e.seq > this.lastSeq);
    if (!fresh.length) return;
    this.lastSeq = fresh[fresh.length - 1].seq;
    this.onEvents(fresh);
  }

  // Fetch stored events after lastSeq up to `upto` (inclusive) from the API.
  async refill(upto) {
    await fetchRange(this.runId, this.lastSeq, upto, (events) => {
      this.lastSeq = events[events.length - 1].seq;
      this.onEvents(events);
    });
  }
}
