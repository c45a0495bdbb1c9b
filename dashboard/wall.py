"""The live wall: ``/ws/wall/?<the runs page's query>`` keeps the runs list current.

Once a second the socket reads the first page of the runs the page's filters select (the same
parse, access rule and filters as ``dashboard.pages.runs.run_list``) and sends what changed since
the last look: ``{"type": "runs", "runs": [<row>...], "ids": [<ids in page order>]}``. A row is
``{"id", "status", "event_count", "ttfb_ms", "ttft_ms", "duration_ms", "tokens_per_s"}``. Polling
the store, not listening to publishes: it works the same from any process, for runs of any source
(a gateway run made by another web process included), and costs one query a second per open wall.
The session is re-read on every look; a socket whose session ended closes with 4401.
"""

from __future__ import annotations

import asyncio
import json
from importlib import import_module
from types import SimpleNamespace
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from django.contrib.auth import get_user as get_session_user
from django.contrib.auth import get_user_model
from django.http import QueryDict

from streams.history import fleet
from streams.models import Run

CLOSE_UNAUTHENTICATED = 4401
CLOSE_BAD_QUERY = 4400
WALL_INTERVAL_S = 1.0
ROW_FIELDS = ("status", "event_count", "ttfb_ms", "ttft_ms", "duration_ms", "tokens_per_s")


def _user(session_key: str | None, user_pk: Any) -> Any:
    if session_key:
        session = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
        user = get_session_user(SimpleNamespace(session=session))
    else:  # a scope built by a test, with a user and no session
        user = get_user_model()._default_manager.filter(pk=user_pk, is_active=True).first()
    if user is None or not user.is_authenticated or user.pk != user_pk:
        return None
    return user


def _row(run: Any) -> dict[str, Any]:
    return {"id": run.pk, **{name: getattr(run, name, None) for name in ROW_FIELDS}}


def first_page(session_key: str | None, user_pk: Any, params: QueryDict) -> list[dict[str, Any]] | None:
    """The rows the runs page would show now, or None when the session no longer holds the user."""
    user = _user(session_key, user_pk)
    if user is None:
        return None
    query = fleet.parse_run_query(params, extra=("all", "format", "page"), getlist=params.getlist)
    query.cursor = None
    runs = Run.objects.visible_to(user)
    if not (params.get("all") == "1" or query.owner):
        runs = runs.filter(owner=user)
    rows, _ = fleet.page_of(fleet.apply_filters(runs, query), query)
    return [_row(run) for run in rows]


class RunsWallConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.watch: asyncio.Task | None = None
        user = self.scope.get("user")
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)
            return
        self.user_pk = user.pk
        self.session_key = getattr(self.scope.get("session"), "session_key", None)
        query = self.scope.get("query_string", b"").decode("latin-1")
        self.params = QueryDict(query)
        try:
            fleet.parse_run_query(self.params, extra=("all", "format", "page"), getlist=self.params.getlist)
        except fleet.BadQuery:
            await self.close(code=CLOSE_BAD_QUERY)
            return
        self.known: dict[int, dict[str, Any]] = {}
        self.watch = asyncio.create_task(self._look_forever(), name="ws-wall")

    async def disconnect(self, code: int) -> None:
        if self.watch is not None:
            self.watch.cancel()

    async def _look_forever(self) -> None:
        look = database_sync_to_async(first_page)
        first = True
        while True:
            rows = await look(self.session_key, self.user_pk, self.params)
            if rows is None:
                await self.close(code=CLOSE_UNAUTHENTICATED)
                return
            changed = [row for row in rows if self.known.get(row["id"]) != row]
            ids = [row["id"] for row in rows]
            if first or changed or ids != list(self.known):
                await self.send(text_data=json.dumps({"type": "runs", "runs": changed, "ids": ids}))
            self.known = {row["id"]: row for row in rows}
            first = False
            await asyncio.sleep(WALL_INTERVAL_S)
