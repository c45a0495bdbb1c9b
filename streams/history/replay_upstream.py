"""A stored run served back as a live upstream: its SSE frames at their original pace.

``/replay/<id>/v1/responses`` (dashboard/replay_api.py) is the HTTP face; this module holds the
parts that know SSE and the store: the per-run bearer tokens and the paced frame generator.
Tokens are random, shown once, and only their SHA-256 is stored (docs/replay.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

from channels.db import database_sync_to_async
from django.db.models import Max, Min
from django.utils import timezone

from streams.history.export import sse_frame, whole_body
from streams.history.replay_clock import MAX, ReplayPosition, is_untimed, replay_times, schedule
from streams.models import Event, ReplayToken, Run
from streams.protocol.metrics import TERMINAL_TYPES

TOKEN_PREFIX = "ssr_"
CHUNK = 2000
# Frames due within this many seconds of each other go out in one write.
COALESCE_S = 0.002


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def issue_token(run: Run) -> str:
    """A new replay token for ``run`` (replacing any earlier one). Shown once, never stored."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ReplayToken.objects.update_or_create(
        run=run, defaults={"token_hash": hash_token(token), "created_at": timezone.now(), "last_used_at": None}
    )
    return token


def revoke_token(run: Run) -> bool:
    deleted, _ = ReplayToken.objects.filter(run=run).delete()
    return bool(deleted)


def token_info(run: Run) -> dict[str, Any] | None:
    token = ReplayToken.objects.filter(run=run).first()
    if token is None:
        return None
    return {"created_at": token.created_at.isoformat(),
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None}


def run_for_token(run_id: int, token: str) -> Run | None:
    """The run if ``token`` is its live replay token and its owner is still an active user."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    record = ReplayToken.objects.select_related("run__owner").filter(token_hash=hash_token(token)).first()
    if record is None or record.run_id != run_id or not record.run.owner.is_active:
        return None
    ReplayToken.objects.filter(pk=record.pk).update(last_used_at=timezone.now())
    return record.run


def run_is_untimed(run: Run) -> bool:
    """Replay in order at a fixed pace: the run says it has no timings, or all its times are equal."""
    if (run.metrics or {}).get("timed") is False:
        return True
    bounds = Event.objects.filter(run=run).aggregate(low=Min("t"), high=Max("t"))
    return run.event_count > 1 and bounds["low"] is not None and is_untimed([bounds["low"], bounds["high"]])


_UNREAD = object()  # final_response's ``whole`` not read by its caller


def whole_answer(run: Run) -> dict[str, Any] | None:
    """A non-streamed answer's JSON (the gateway's one ``streamscope.response_body`` event: a Response,
    a chat.completion); None for a streamed run. A body that was not a JSON object gives ``{}``."""
    data = whole_body(run)
    if data is None:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}


def final_response(run: Run, whole: dict[str, Any] | None | object = _UNREAD) -> dict[str, Any] | None:
    """The terminal event's response object (what a non-streaming request returns); for a run whose
    answer came whole (``whole``, :func:`whole_answer`'s, when already read), that answer when it is a
    Response."""
    if whole is _UNREAD:
        whole = whole_answer(run)
    if whole is not None:
        return whole if whole.get("object") == "response" else None
    event = Event.objects.filter(run=run, type__in=list(TERMINAL_TYPES)).order_by("-seq").first()
    if event is None:
        return None
    try:
        payload = json.loads(event.data)
    except ValueError:
        return None
    response = payload.get("response") if isinstance(payload, dict) else None
    return response if isinstance(response, dict) else None


def _chunk(run_id: int, after: int) -> list[tuple[int, float, str, str]]:
    rows = Event.objects.filter(run_id=run_id, seq__gt=after).order_by("seq").values_list("seq", "t", "type", "data")
    return list(rows[:CHUNK])


async def replay_frames(run_id: int, speed: float, untimed: bool) -> AsyncIterator[str]:
    """The run's SSE frames, each sent when it is due at ``speed`` (``MAX``: as fast as read)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    after, index, floor = -1, 0, 0.0
    while True:
        rows = await database_sync_to_async(_chunk)(run_id, after)
        if not rows:
            return
        times = replay_times([t for _, t, _, _ in rows], untimed, start_index=index, floor_ms=floor)
        pending: list[str] = []
        due = schedule(times, speed, ReplayPosition(0, 0.0))  # this chunk's times are absolute
        for (_, due_ms), (_, _, event_type, data) in zip(due, rows, strict=True):
            wait = 0.0 if speed == MAX else started + due_ms / 1000 - loop.time()
            if wait > COALESCE_S:
                if pending:
                    yield "".join(pending)
                    pending = []
                await asyncio.sleep(wait)
            frame = sse_frame(event_type, data)
            if frame:
                pending.append(frame)
        if pending:
            yield "".join(pending)
        after, index, floor = rows[-1][0], index + len(rows), times[-1]
