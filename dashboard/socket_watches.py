"""What closes or ends a viewer's socket besides its own messages, one watch of each per event loop:
its session's logout and periodic re-check (:class:`SessionWatch`), and its run's end when the
final status message was lost (:class:`EndWatch`). Both tell a socket through
:meth:`dashboard.consumers.RunConsumer.offer`, so it acts between its handlers, never inside one;
neither needs a channel or a task per socket.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import time
from importlib import import_module
from types import SimpleNamespace
from typing import Any, Protocol

from channels.db import database_sync_to_async
from django.conf import settings
from django.contrib.auth import get_user as get_session_user
from django.contrib.auth import get_user_model

from dashboard.auth import session_group
from streams.models import TERMINAL_STATUSES, Run
from streams.pipeline.per_loop import PerLoop
from streams.pipeline.viewers import listen

log = logging.getLogger(__name__)

CLOSE_UNAUTHENTICATED = 4401
CLOSE_FORBIDDEN = 4403
STATUS_CHECK_S = 5.0  # a live socket that hears nothing this long checks whether its run ended
SESSION_CHECK_S = 30.0  # how often an open socket re-checks its session and the user's access


class WatchedSocket(Protocol):
    """What the watches need of a socket (dashboard.consumers.RunConsumer)."""

    run_id: int
    session_key: str | None
    user_pk: Any
    channel_layer: Any
    last_message: float  # monotonic time of the last message it heard from its run

    def offer(self, message: dict[str, Any]) -> None: ...


@database_sync_to_async
def _refusals(session_key: str | None, user_pk: Any, run_ids: set[int]) -> dict[int, int | None]:
    """For each run a socket of this session watches: why it must close now (a close code), or
    None while the session still holds ``user_pk`` and the user may still see the run. The
    session is read afresh from its store: the scope's copy was loaded once, at the handshake. (A
    scope with no session at all, as a test may build, has only the user to re-read.)"""
    if session_key:
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = get_session_user(SimpleNamespace(session=session))
    else:
        user = get_user_model()._default_manager.filter(pk=user_pk, is_active=True).first()
    if user is None or not user.is_authenticated or user.pk != user_pk:
        return dict.fromkeys(run_ids, CLOSE_UNAUTHENTICATED)
    visible = set(Run.objects.visible_to(user).filter(pk__in=run_ids).values_list("pk", flat=True))
    return {run_id: None if run_id in visible else CLOSE_FORBIDDEN for run_id in run_ids}


class SessionWatch:
    """The open sockets of each session in this process, and what ends them.

    A logout elsewhere is one message to the session's channel-layer group (dashboard/auth.py):
    the session, not each socket, is a member here, through one channel and one listening task per
    session in this process, which hands the message to each of the session's sockets. And every
    :data:`SESSION_CHECK_S` the session's sockets are re-checked together: one database hop per
    session (the session, its user, which of the watched runs the user may still see) instead of
    three queries per socket. A socket to close is handed ``session.ended`` or ``session.check``
    with its code (:meth:`WatchedSocket.offer`), so it closes between its handlers, never inside one."""

    def __init__(self) -> None:
        self.sessions: dict[tuple[str | None, Any], dict[WatchedSocket, None]] = {}
        self.tasks: dict[tuple[str | None, Any], asyncio.Task] = {}  # the periodic re-check
        self.listeners: dict[tuple[str | None, Any], _SessionListener] = {}
        self._leaving: set[asyncio.Task] = set()  # group_discard of sessions whose last socket left

    async def watch(self, consumer: WatchedSocket) -> None:
        """Returns once a logout of the consumer's session reaches it."""
        key = (consumer.session_key, consumer.user_pk)
        self.sessions.setdefault(key, {})[consumer] = None
        if key not in self.tasks:
            # Contexts of their own: the first socket's dies with it.
            self.tasks[key] = asyncio.get_running_loop().create_task(
                self._check_forever(key), name="ws-session-check", context=contextvars.Context())
            if consumer.session_key and consumer.channel_layer is not None:
                self.listeners[key] = _SessionListener(self, key, consumer.channel_layer)
        listener = self.listeners.get(key)
        if listener is not None:
            try:
                await asyncio.shield(listener.joined)
            except BaseException:  # cancelled too: a socket that never joined must not stay listed
                self.unwatch(consumer)
                raise

    def unwatch(self, consumer: WatchedSocket) -> None:
        key = (getattr(consumer, "session_key", None), getattr(consumer, "user_pk", None))
        sockets = self.sessions.get(key)
        if sockets is None or consumer not in sockets:
            return
        del sockets[consumer]
        if not sockets:
            del self.sessions[key]
            self.tasks.pop(key).cancel()
            listener = self.listeners.pop(key, None)
            if listener is not None:
                leaving = listener.leave()
                self._leaving.add(leaving)
                leaving.add_done_callback(self._leaving.discard)

    def tell(self, key: tuple[str | None, Any], message: dict) -> None:
        for socket_ in list(self.sessions.get(key, ())):
            socket_.offer(message)

    async def _check_forever(self, key: tuple[str | None, Any]) -> None:
        while True:
            await asyncio.sleep(SESSION_CHECK_S)
            sockets = list(self.sessions.get(key, ()))
            try:
                codes = await _refusals(key[0], key[1], {socket_.run_id for socket_ in sockets})
            except Exception:  # the database is busy or gone: the next round asks again
                log.warning("session re-check failed; trying again in %ss", SESSION_CHECK_S, exc_info=True)
                continue
            for socket_ in sockets:
                code = codes.get(socket_.run_id)
                if code is not None:
                    socket_.offer({"type": "session.check", "code": code})


class _SessionListener:
    """One session's membership of its group in this process: a channel of its own, joined to the
    group, and the task that hands what arrives there to the session's sockets. Each session's
    stay gets a fresh channel, so leaving (a group_discard in flight) never races a later join."""

    def __init__(self, watch: SessionWatch, key: tuple[str | None, Any], layer: Any) -> None:
        self.layer = layer
        self.group = session_group(key[0])  # type: ignore[arg-type]
        self.channel: str | None = None
        self.joined: asyncio.Future = asyncio.get_running_loop().create_future()
        self.task = asyncio.get_running_loop().create_task(
            self._listen(watch, key), name="ws-session-listen", context=contextvars.Context())

    async def _listen(self, watch: SessionWatch, key: tuple[str | None, Any]) -> None:
        try:
            self.channel = await self.layer.new_channel()
            await self.layer.group_add(self.group, self.channel)
        except asyncio.CancelledError:
            self.joined.cancel()
            raise
        except Exception as exc:  # said to the joiners, whose sockets fail to connect
            self.joined.set_exception(exc)
            return
        self.joined.set_result(None)
        await listen(self.layer, self.channel, functools.partial(watch.tell, key), "a session's sockets")

    def leave(self) -> asyncio.Task:
        return asyncio.get_running_loop().create_task(self._leave(), name="ws-session-leave",
                                                      context=contextvars.Context())

    async def _leave(self) -> None:
        await asyncio.wait([self.joined])  # a join in flight ends first, or it would outlive the leave
        self.task.cancel()
        if self.joined.cancelled() or self.joined.exception() is not None:
            return
        try:
            await self.layer.group_discard(self.group, self.channel)
        except Exception:  # the membership expires on its own (the layer's group_expiry)
            log.warning("a session's sockets: leaving its group failed", exc_info=True)


_session_watches = PerLoop(SessionWatch)


def session_watch() -> SessionWatch:
    """The running event loop's watch (tests run several loops)."""
    return _session_watches.get()


@database_sync_to_async
def _ended_runs(run_ids: list[int]) -> list[tuple[int, str, dict, object, int]]:
    return list(Run.objects.filter(pk__in=run_ids, status__in=TERMINAL_STATUSES)
                .values_list("pk", "status", "metrics", "error", "event_count"))


class EndWatch:
    """The live sockets of this process whose run had not ended when they connected, swept together
    every :data:`STATUS_CHECK_S`. A run's final status is one channel-layer message and can be
    dropped like any other (a web process that falls behind has its Redis queue capped); a socket
    that has heard nothing for a period is a candidate, and the runs of all candidates are read in
    one query. Each socket of an ended run is handed that run's stored end (``run.check``) as if
    its status message had come, so it sends what is left from the store and the final status.
    One task and at most one query per period for the process, instead of a task per socket."""

    def __init__(self) -> None:
        self.sockets: dict[WatchedSocket, None] = {}
        self.task: asyncio.Task | None = None

    def watch(self, consumer: WatchedSocket) -> None:
        consumer.last_message = time.monotonic()
        self.sockets[consumer] = None
        if self.task is None or self.task.done():
            # A context of its own: the first socket's dies with it.
            self.task = asyncio.get_running_loop().create_task(
                self._sweep_forever(), name="ws-end-watch", context=contextvars.Context())

    def unwatch(self, consumer: WatchedSocket) -> None:
        self.sockets.pop(consumer, None)
        if not self.sockets and self.task is not None:
            self.task.cancel()
            self.task = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(STATUS_CHECK_S)
            try:
                await self.sweep()
            except Exception:  # the database is busy or gone: the next round asks again
                log.warning("run end sweep failed; trying again in %ss", STATUS_CHECK_S, exc_info=True)

    async def sweep(self) -> None:
        quiet_since = time.monotonic() - STATUS_CHECK_S
        idle: dict[int, list[WatchedSocket]] = {}
        for socket_ in self.sockets:
            if socket_.last_message <= quiet_since and not getattr(socket_, "ended", False):
                idle.setdefault(socket_.run_id, []).append(socket_)
        if not idle:
            return
        for run_id, status, metrics, error, event_count in await _ended_runs(list(idle)):
            message = {"type": "run.check", "run": run_id, "status": status, "metrics": metrics, "error": error,
                       "last_seq": event_count - 1}
            for socket_ in idle[run_id]:
                if socket_ in self.sockets:  # not gone while the query ran
                    socket_.offer(message)


_end_watches = PerLoop(EndWatch)


def end_watch() -> EndWatch:
    """The running event loop's watch (tests run several loops)."""
    return _end_watches.get()
