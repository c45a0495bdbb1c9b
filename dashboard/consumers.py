"""The websocket a page watches a run through: backlog from the store, then live batches.

Zulip's shape: join the run's viewers first, then send the backlog from the database, then forward
live batches, skipping what was already sent and refilling any gap from the store (channel
layers may drop messages). So a client gets every event after ``after`` exactly once, in order.

The run's messages (batches, status, flags) do not come through the channel layer one copy per
viewer: the process's viewers of a run are registered once (streams.pipeline.viewers), each
message is handed to :meth:`RunConsumer.offer`, which queues it in the viewer's own inbox, and
one task at a time works the inbox through the same handlers, never at the same time as a
handler of the socket's own messages (``turn``). A full inbox drops batches like a full channel
would. A consumer has no channel of its own: what else it is told (its session's logout and
re-checks, a run's lost end) is offered the same way.

A slow viewer never holds anyone up: Daphne buffers a socket's unsent output without limit, so
when a viewer's buffer passes :data:`VIEWER_HIGH_WATER` bytes it stops getting live batches (they
are in the store) and, once the buffer drains below :data:`VIEWER_LOW_WATER`, catches up from the
store a page at a time. Memory per viewer stays bounded; the run and other viewers never wait.

Refusals are said with close codes the page understands (static/js/socket.js stops reconnecting on
them): the socket is accepted first and then closed with 4401 (not logged in) or 4403 (may not see
the run; also for "no such run"). Closing *before* accepting would make Daphne answer the handshake
with HTTP 403, which a browser reports as 1006, indistinguishable from a network error. A socket
lives no longer than its session: logging out closes it at once, and the session's sockets in
this process are re-checked together every few seconds (expiry, password change, deactivation,
reviewer role removed), closing with 4401 or 4403 (dashboard/socket_watches.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from channels.consumer import get_handler_name
from channels.db import database_sync_to_async
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.db import connection

from dashboard.socket_watches import CLOSE_FORBIDDEN, CLOSE_UNAUTHENTICATED, end_watch, session_watch
from dashboard.twisted_shim import SocketClosed, TextFrames, send_at_once, transport_of, unsent_bytes
from streams.models import TERMINAL_STATUSES, Run, RunFlag
from streams.pipeline import store
from streams.pipeline.viewers import local_viewers
from streams.protocol.records import events_frame

log = logging.getLogger(__name__)

BACKLOG_PAGE = 2000
CLOSE_INTERNAL_ERROR = 4500  # a server error: the page reconnects (1011 is not a code a server may send here)
VIEWER_HIGH_WATER = 1024 * 1024  # unsent bytes that make a viewer "behind"
VIEWER_LOW_WATER = 256 * 1024  # a behind viewer catches up once its buffer is below this
DRAIN_POLL_S = 0.05
# Daphne refuses to send a websocket message over 1 MiB (its --websocket_max_message_size),
# so a batch is split into frames of at most this many characters (< 1 MiB even as 4-byte UTF-8).
FRAME_MAX_CHARS = 200_000
INBOX_MAX = 100  # queued live batches per viewer; beyond, batches are dropped and refilled (Channels' capacity)


@dataclass(frozen=True, slots=True)
class RunEnd:
    """The little of a run's row a viewer's opening needs (not the row: its request, output text
    and JSON columns would be read and decoded for every viewer that connects)."""

    status: str
    metrics: dict[str, Any]
    error: Any
    event_count: int


@database_sync_to_async
def _opening(run_id: int, after: int, user: Any) -> tuple[
        bool, RunEnd | None, list[tuple[int, str]], list[dict[str, Any]]]:
    """Whether ``user`` may see the run, and what a joined viewer is sent first, in one hop to the
    database thread (each hop waits its turn behind the runs' writes): the run's row, which also
    says who owns it; then the first page of its stored events after ``after`` (read after the
    row, so a row that says the run ended comes with every event); then its moderation flags so
    far. Nothing but False for a run the user may not see, or that does not exist."""
    # Written out rather than built by the ORM: building and compiling a query cost ~150-300 us of
    # CPU each here, the statement itself ~15 (``Model.objects.raw`` still decodes the JSON
    # columns and dates as the ORM does); a viewer's handshake made six queries.
    table = connection.ops.quote_name(Run._meta.db_table)
    found = next(iter(Run.objects.raw(
        f"SELECT id, owner_id, status, metrics, error, event_count FROM {table} WHERE id = %s", [run_id])), None)
    if found is None or not _may_see(run_id, found.owner_id, user):
        return False, None, [], []
    run = RunEnd(found.status, found.metrics, found.error, found.event_count)
    return True, run, store.encoded_events_after(run_id, after, BACKLOG_PAGE), _flags(run_id)


def _flags(run_id: int) -> list[dict[str, Any]]:
    """The run's moderation flags in the order dashboard.serializers.flags_json gives them."""
    table = connection.ops.quote_name(RunFlag._meta.db_table)
    sql = f"SELECT * FROM {table} WHERE run_id = %s ORDER BY created_at, id"
    return [flag.to_json() for flag in RunFlag.objects.raw(sql, [run_id])]


def _may_see(run_id: int, owner_id: int, user: Any) -> bool:
    # An active user sees their own runs (RunQuerySet.visible_to), which is nearly every viewer:
    # known from the row already read, without visible_to's look-up of the user's groups
    # (is_reviewer, a query per connection, as each connection has its own user object).
    if user.is_active and owner_id == user.pk:
        return True
    return Run.objects.visible_to(user).filter(pk=run_id).exists()


@database_sync_to_async
def _events_after(run_id: int, after: int, upto: int | None) -> list[tuple[int, str]]:
    return store.encoded_events_after(run_id, after, BACKLOG_PAGE, upto)


class RunConsumer(AsyncWebsocketConsumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # The messages waiting for this viewer (see offer): a list, as it is empty nearly always (an
        # empty deque is ~600 bytes, per viewer) and never longer than INBOX_MAX.
        self.inbox: list[dict] = []
        self.turn = asyncio.Lock()  # one handler at a time, the socket's or the inbox's
        self.draining: asyncio.Task | None = None  # working the inbox; None when it is empty
        self.gone = False
        self.joined = False

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        """Channels' consumer loop without a channel of its own: everything a viewer is sent comes
        through :meth:`offer` (the run's messages, its session's logout and re-checks, a lost end),
        so only the socket is read here, in the connection's own task. Channels would add a
        channel-layer channel and two tasks per socket (``await_many_dispatch``) and a pair of
        futures per message.

        However this connection ends (a clean disconnect, ``connect()`` failing after the join,
        Daphne cancelling the app), the viewer leaves the process's registry: nothing else would
        drop it, and a registered viewer keeps its run's group joined."""
        self.scope = scope
        self.channel_layer = get_channel_layer(self.channel_layer_alias)
        self.base_send = send
        try:
            while True:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            self._leave_viewers()

    def _leave_viewers(self) -> None:
        self.gone = True
        session_watch().unwatch(self)
        end_watch().unwatch(self)
        if self.joined:
            self.joined = False
            self.viewers.leave(self.run_id, self)

    async def dispatch(self, message: dict) -> None:
        """Channels' dispatch without its ``aclose_old_connections()`` before every handler: that
        is a hop to the one thread all database work runs on, so each live batch for each viewer
        queued behind the runs' writes (hundreds of ms with 200 runs, docs/performance.md). These
        handlers reach the database only through database_sync_to_async, which closes stale
        connections itself."""
        if getattr(self, "refused", False) and message["type"] != "websocket.disconnect":
            return  # closing: nothing more goes out
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        async with self.turn:
            await handler(message)

    def offer(self, message: dict) -> None:
        """A message for this viewer: the run's (from the process's registry of viewers), its session's
        (SessionWatch) or its run's stored end (EndWatch). It must not wait."""
        if self.gone:
            return
        if message["type"] == "run.events":
            if len(self.inbox) >= INBOX_MAX:
                return  # like a full channel; the next batch finds the gap and refills it from the store
            if not self.inbox and not self.turn.locked() and self._send_live_now(message):
                return
        if message["type"].startswith("session."):
            self.inbox.insert(0, message)  # a logout or a lost right closes before any batch goes out
        else:
            self.inbox.append(message)
        if self.draining is None or self.draining.done():
            # A context of its own: the publisher's may belong to a request (see streams.live.launcher).
            self.draining = asyncio.get_running_loop().create_task(self._drain(), context=contextvars.Context())

    def _send_live_now(self, message: dict) -> bool:
        """The common case, without a task per viewer per batch: the next batch in order, one frame,
        a viewer keeping up, nothing queued or running before it, and a socket the frame writer can
        write to now. True when handled; anything else goes through the inbox (False)."""
        frames = getattr(self, "text_frames", None)
        if frames is None or getattr(self, "refused", False) or self.behind:
            return False
        first, events = message["first"], message["events"]
        last = first + len(events) - 1
        if last <= self.last_sent:
            self.last_message = time.monotonic()
            return True  # sent already (from the store)
        if first != self.last_sent + 1 or self.unsent() > VIEWER_HIGH_WATER:
            return False
        live = _live_frames(events)
        if len(live) != 1 or not frames.send(live[0]):
            return False
        self.last_message = time.monotonic()
        self.last_sent = last
        return True

    async def _drain(self) -> None:
        # The turn is taken per message, so a handler of the socket's (a disconnect) gets in
        # between batches of a busy run instead of waiting for the inbox to run dry.
        try:
            while self.inbox and not self.gone:
                async with self.turn:
                    if not self.inbox or self.gone:
                        break
                    message = self.inbox.pop(0)
                    if getattr(self, "refused", False):
                        continue
                    try:
                        await getattr(self, get_handler_name(message))(message)
                    except SocketClosed:
                        self.gone = True  # closed under it; Daphne's disconnect message is on its way
                    except Exception:
                        self.gone = True  # close; the page reconnects with ?after=
                        log.exception("run %s: a viewer failed on a %s message; closing it", self.run_id,
                                      message.get("type"))
                        with contextlib.suppress(Exception):
                            await self.close(code=CLOSE_INTERNAL_ERROR)
        finally:
            # Not kept once done: a finished task and its coroutine are ~650 bytes per viewer.
            if self.draining is asyncio.current_task():
                self.draining = None

    async def connect(self) -> None:
        self.run_id = int(self.scope["url_route"]["kwargs"]["run_id"])
        self.last_sent = -1
        self.behind = False
        self.transport = transport_of(self.base_send)
        if self.transport is not None:
            send_at_once(self.transport)  # frames to the socket now, not on the reactor's next turn
        self.text_frames = TextFrames.of(self.base_send)  # frames written here, not through autobahn
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None)
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.refuse(CLOSE_UNAUTHENTICATED, accept=True)
            return
        self.user_pk = user.pk
        self.last_sent = _after_param(self.scope.get("query_string", b""))
        await session_watch().watch(self)  # from here on, a logout reaches this socket
        self.viewers = local_viewers(self.channel_layer)
        await self.viewers.join(self.run_id, self)
        self.joined = True
        # Joined before the access check, which is read with the opening in one hop: what the run
        # publishes meanwhile waits in the inbox (this handler holds the turn), and a refused
        # socket's inbox is never sent (dispatch and _drain skip it once ``refused``).
        allowed, run, rows, flags = await _opening(self.run_id, self.last_sent, user)
        if not allowed:
            # The same answer for "no such run" and "not yours": ids reveal nothing.
            await self.refuse(CLOSE_FORBIDDEN, accept=True)
            return
        await self.accept()
        if rows:
            await self._send_events([encoded for _, encoded in rows])
            self.last_sent = rows[-1][0]
            if len(rows) == BACKLOG_PAGE:
                await self._send_stored(upto=None)  # the rest a page at a time, at the viewer's pace
        if run is None:
            return
        if run.status in TERMINAL_STATUSES:
            self.ended = True
            await self._send_status(run.status, run.metrics, run.error, run.event_count - 1)
        else:
            # The status message published when streaming began may predate this socket.
            await self._send_status(run.status, {}, None, None)
            end_watch().watch(self)
        for flag in flags:  # moderation flags so far; later ones come as run.flag
            await self.send(text_data=json.dumps({"type": "flag", "flag": flag}))

    async def refuse(self, code: int, accept: bool = False) -> None:
        """Close with ``code``; during the handshake, accept first so that the browser sees the
        code rather than a failed handshake (see the module doc)."""
        self.refused = True
        self._leave_viewers()  # nothing more to check for it, nor to hand it
        if accept:
            await self.accept()
        await self.close(code=code)

    async def disconnect(self, code: int) -> None:
        self.gone = True
        self.inbox.clear()
        self._leave_viewers()

    async def session_ended(self, message: dict) -> None:
        """The session logged out (dashboard/auth.py sends this to the session's group)."""
        await self.refuse(CLOSE_UNAUTHENTICATED)

    async def session_check(self, message: dict) -> None:
        """The session's re-check (SessionWatch) found this socket must close."""
        await self.refuse(message["code"])

    async def run_check(self, message: dict) -> None:
        """The run ended in the store while nothing reached this viewer (:class:`EndWatch`)."""
        if not getattr(self, "ended", False):
            await self.run_status(message)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        # Viewers only listen; a ping keeps proxies from closing an idle socket.
        if text_data == "ping":
            await self.send(text_data='{"type":"pong"}')

    async def send(self, text_data: str | None = None, bytes_data: bytes | None = None, close: bool = False) -> None:
        """Text frames straight to the socket under Daphne (dashboard/twisted_shim.TextFrames);
        everything else, and anything that writer declines, the usual way."""
        frames = getattr(self, "text_frames", None)
        if frames is not None and text_data is not None and not close and frames.send(text_data):
            return
        await super().send(text_data=text_data, bytes_data=bytes_data, close=close)

    def unsent(self) -> int:
        """Bytes this viewer's socket has not taken yet (0 when that cannot be known)."""
        return unsent_bytes(self.transport) if self.transport is not None else 0

    async def _send_stored(self, upto: int | None, wait: bool = True) -> bool:
        """Send stored events after last_sent (up to ``upto``), a page per frame.

        Between pages, a viewer whose buffer is above the low-water mark is given time to read
        (``wait``) or left behind for now (``wait=False``, returns False); True once sent.
        """
        while True:
            while self.unsent() > VIEWER_LOW_WATER:
                if not wait:
                    return False
                await asyncio.sleep(DRAIN_POLL_S)
            rows = await _events_after(self.run_id, self.last_sent, upto)
            if not rows:
                return True
            await self._send_events([encoded for _, encoded in rows])
            self.last_sent = rows[-1][0]
            if len(rows) < BACKLOG_PAGE:
                return True

    async def run_events(self, message: dict) -> None:
        self.last_message = time.monotonic()
        first = message["first"]
        events = message["events"]
        last = first + len(events) - 1
        if last <= self.last_sent:
            return
        if self.behind or self.unsent() > VIEWER_HIGH_WATER:
            # Slow viewer: skip live batches (the store has them) and catch up when it drains.
            if not self.behind:
                log.info("run %s: a viewer fell behind (%d bytes unsent); it catches up from the store",
                         self.run_id, self.unsent())
            self.behind = not await self._send_stored(upto=last, wait=False)
            return
        if first > self.last_sent + 1:
            # A batch went missing (dropped by the layer, or sent before we joined): refill.
            await self._send_stored(upto=first - 1)
        start = self.last_sent + 1 - first
        if start < 0:
            # The store did not have the whole gap yet: never send out of order.
            await self._send_stored(upto=last)
            return
        if start:
            await self._send_events(events[start:])
        else:
            for frame in _live_frames(events):
                await self.send(text_data=frame)
        self.last_sent = last

    async def _send_events(self, encoded_events: list[str]) -> None:
        for frame in _frames(encoded_events):
            await self.send(text_data=frame)

    async def run_status(self, message: dict) -> None:
        self.last_message = time.monotonic()
        if getattr(self, "ended", False):
            # Said already (the row's end at connect, or the stored end EndWatch found first): nothing
            # follows an end, also not a "streaming" published before it and queued behind the opening.
            return
        if message["status"] in TERMINAL_STATUSES:
            self.ended = True
            end_watch().unwatch(self)
        last_seq = message.get("last_seq", -1)
        if last_seq is not None and last_seq > self.last_sent:
            # The end: everything left goes out now, at the pace this viewer reads.
            await self._send_stored(upto=last_seq)
            self.behind = False
        await self._send_status(message["status"], message.get("metrics") or {}, message.get("error"), last_seq)

    async def run_flag(self, message: dict) -> None:
        await self.send(text_data=json.dumps({"type": "flag", "flag": message["flag"]}))

    async def _send_status(self, status: str, metrics: dict, error: object, last_seq: int | None) -> None:
        frame = {"type": "status", "status": status, "metrics": metrics, "error": error, "last_seq": last_seq}
        await self.send(text_data=json.dumps(frame))


# A frame holds its events as a JSON array inside '{"type":"events","events":[...]}': its length
# is the events' lengths, a comma between each two, and this much more.
FRAME_OVERHEAD = len(events_frame([])) - 1


def _frames(encoded_events: list[str]) -> list[str]:
    """One frame per batch, split where it would pass FRAME_MAX_CHARS."""
    frame = events_frame(encoded_events)
    if len(frame) - FRAME_OVERHEAD <= FRAME_MAX_CHARS:
        return [frame]  # nearly always: joined once, no need to measure event by event
    frames, start, size = [], 0, 0
    for index, encoded in enumerate(encoded_events):
        size += len(encoded) + 1
        if size > FRAME_MAX_CHARS and index > start:
            frames.append(events_frame(encoded_events[start:index]))
            start, size = index, len(encoded) + 1
    frames.append(events_frame(encoded_events[start:]))
    return frames


class _LastBatch:
    """Every viewer of a run in this process is handed the same message, one after another
    (streams.pipeline.viewers.LocalViewers.deliver): the last batch's frames, built once for them
    all. Known by the identity of its list of events, which this keeps alive (so no other list
    can take its id); a table of recent batches cost more per batch than a lone viewer's frame."""

    events: list[str] | None = None
    frames: list[str] = []


def _live_frames(encoded_events: list[str]) -> list[str]:
    last = _LastBatch
    if last.events is not encoded_events:
        last.frames = _frames(encoded_events)
        last.events = encoded_events
    return last.frames


def _after_param(query_string: bytes) -> int:
    values = parse_qs(query_string.decode("latin-1")).get("after")
    try:
        return max(-1, int(values[0])) if values else -1
    except ValueError:
        return -1
