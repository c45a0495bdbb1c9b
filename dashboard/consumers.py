"""The websocket a page watches a run through: backlog from the store, then live batches.

Zulip's shape: join the group first, then send the backlog from the database, then forward
live batches, skipping what was already sent and refilling any gap from the store (channel
layers may drop messages). So a client gets every event after ``after`` exactly once, in order.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from streams import store
from streams.broadcast import group_name
from streams.models import TERMINAL_STATUSES, Run
from streams.records import events_frame

BACKLOG_PAGE = 2000
CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403


@database_sync_to_async
def _load_run(run_id: int) -> Run | None:
    return Run.objects.filter(pk=run_id).first()


@database_sync_to_async
def _events_after(run_id: int, after: int, upto: int | None) -> list[tuple[int, str]]:
    return store.encoded_events_after(run_id, after, BACKLOG_PAGE, upto)


class RunConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.group = group_name(self.run_id)
        self.last_sent = -1
        self.joined = False
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        run = await _load_run(self.run_id)
        if run is None or not run.visible_to(user):
            # The same answer for "no such run" and "not yours": ids reveal nothing.
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.last_sent = _after_param(self.scope.get("query_string", b""))
        await self.channel_layer.group_add(self.group, self.channel_name)
        self.joined = True
        await self.accept()
        await self._send_stored(upto=None)
        run = await _load_run(self.run_id)
        if run is None:
            return
        if run.status in TERMINAL_STATUSES:
            await self._send_stored(upto=None)
            await self._send_status(run.status, run.metrics, run.error, run.event_count - 1)
        else:
            # The status message published when streaming began may predate this socket.
            await self._send_status(run.status, {}, None, None)

    async def disconnect(self, code: int) -> None:
        if self.joined:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Viewers only listen; a ping keeps proxies from closing an idle socket.
        if text_data == "ping":
            await self.send(text_data='{"type":"pong"}')

    async def _send_stored(self, upto: int | None) -> None:
        """Send stored events after last_sent (up to ``upto``), a page per frame."""
        while True:
            rows = await _events_after(self.run_id, self.last_sent, upto)
            if not rows:
                return
            await self.send(text_data=events_frame([encoded for _, encoded in rows]))
            self.last_sent = rows[-1][0]
            if len(rows) < BACKLOG_PAGE:
                return

    async def run_events(self, message: dict) -> None:
        first = message["first"]
        events = message["events"]
        last = first + len(events) - 1
        if last <= self.last_sent:
            return
        if first > self.last_sent + 1:
            # A batch went missing (dropped by the layer, or sent before we joined): refill.
            await self._send_stored(upto=first - 1)
        start = self.last_sent + 1 - first
        if start < 0:
            # The store did not have the whole gap yet: never send out of order.
            await self._send_stored(upto=last)
            return
        await self.send(text_data=events_frame(events[start:] if start else events))
        self.last_sent = last

    async def run_status(self, message: dict) -> None:
        last_seq = message.get("last_seq", -1)
        if last_seq is not None and last_seq > self.last_sent:
            await self._send_stored(upto=last_seq)
        await self._send_status(message["status"], message.get("metrics") or {}, message.get("error"), last_seq)

    async def _send_status(self, status: str, metrics: dict, error: object, last_seq: int | None) -> None:
        frame = {"type": "status", "status": status, "metrics": metrics, "error": error, "last_seq": last_seq}
        await self.send(text_data=json.dumps(frame))


def _after_param(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("after")
    try:
        return max(-1, int(values[0])) if values else -1
    except ValueError:
        return -1
