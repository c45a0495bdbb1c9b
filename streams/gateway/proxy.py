"""Forwarding one gateway request to its provider and recording the answer as a run.

The client comes first: each chunk of an event stream is handed to the client as soon as it
arrives (sent on the connection by the loop that reads it, :class:`StreamRelay`) and only then
given to the recorder, which runs behind the relay. HTTP errors come back with their status, body
and headers. The caller's own upstream key (providers with ``gateway_key: "caller"``) lives only in
this request's memory.

Which requests become runs: ``POST responses``, ``POST chat/completions`` and
``GET responses/<id>?stream=true`` (a resumed stream). The rest (``models``, ``GET responses/<id>``,
``POST responses/<id>/cancel``, ...) are passed through unrecorded: they carry no model output.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import re
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from channels.db import database_sync_to_async
from django.conf import settings
from django.db.models.signals import post_delete, post_save
from django.utils import timezone

from streams.gateway import leg
from streams.gateway.backlog import PROCESS_SPILL_MAX_BYTES, Backlog, SpillFailed
from streams.gateway.leg import LegResponse
from streams.gateway.recorder import FLUSHES_AHEAD, GatewayRecorder
from streams.gateway.run_row import (
    MaybeInserted,
    PendingRow,
    insert_here,
    insert_on_loop,
    take_reserved_id,
    unflushed,
)
from streams.live import stoppers
from streams.live.recorder import WORKER_NAME
from streams.models import ModerationRule, Run, RunSource, RunStatus
from streams.pipeline.per_loop import PerLoop
from streams.protocol.values import BadValue, clean_json
from streams.review.moderation import LiveModerator, ModerationStopped, enabled_rules
from streams.upstream.client import UpstreamError, iter_body, make_client
from streams.upstream.providers import Provider

log = logging.getLogger(__name__)

# An id may hold dots but not start with one: "." or ".." would climb the upstream's URL (httpx drops
# dot segments) with the provider's key attached.
ID = r"[A-Za-z0-9_\-][A-Za-z0-9_.\-]*"
# (method, path pattern, kind): "record" makes a run, "resume" makes one when ?stream=true.
ROUTES = [
    ("POST", re.compile(r"responses"), "record"),
    ("POST", re.compile(r"chat/completions"), "record"),
    ("GET", re.compile(rf"responses/({ID})"), "resume"),
    ("POST", re.compile(rf"responses/({ID})/cancel"), "pass"),
    ("DELETE", re.compile(rf"responses/({ID})"), "pass"),
    ("GET", re.compile(rf"responses/({ID})/input_items"), "pass"),
    ("GET", re.compile(r"models"), "pass"),
    ("GET", re.compile(rf"models/({ID})"), "pass"),
]
# Request headers an SDK may set that the provider needs; nothing else of the client's goes on.
FORWARDED_REQUEST_HEADERS = ("openai-organization", "openai-project", "openai-beta", "idempotency-key")
# Response headers the client gets back (beside every x-ratelimit-*).
PASSED_RESPONSE_HEADERS = frozenset({
    "content-type", "retry-after", "retry-after-ms", "x-request-id", "openai-processing-ms",
    "openai-version", "openai-organization", "openai-project", "cache-control",
})
QUEUE_CHUNKS = 64  # chunks read ahead of a slow client before the upstream is read no further
# Recording behind the relay: at most this many bytes are recorded before the relay gets a turn again.
RECORD_SLICE_BYTES = 64 * 1024
# A stream arriving faster than this (bytes per ms, from one chunk to the next: ~1 MB/s, a few
# thousand events a second) is a burst, recorded once it pauses for BURST_PAUSE_MS (or ends):
# recording a burst while it lasts takes the CPU the upstream, the relay and the client need on a
# small machine. A paced stream (one event every few or tens of ms) is recorded chunk by chunk.
BURST_BYTES_PER_MS = 1024
# A burst pauses when the upstream sends nothing for this long. 10 ms was too short on a busy machine:
# with the provider, the relay and the client on 2 cores, the provider is often descheduled that long
# mid-burst, and each such gap had the recorder take a 256 KiB read (~800 events) during the burst.
BURST_PAUSE_MS = 50.0
# The first chunk has no chunk before it to give a rate: it starts a burst when it is this large (a
# provider's whole cached answer, or a relay behind its upstream); a paced stream's first is a few KiB.
FIRST_CHUNK_BURST_BYTES = 64 * 1024
NEVER = float("-inf")
# A burst's unrecorded bytes are held in memory up to this, then in a temporary file (backlog.py), so
# the relay never waits for the recorder: recording a 100,000-event burst while it lasted (past a 6 MiB
# soft limit), or holding the relay at 8 MiB, took its throughput from ~85% of direct to 40-60% on 2
# cores (docs/performance.md). Past SPILL_MAX_BYTES held in its file (or the process's files past
# backlog.PROCESS_SPILL_MAX_BYTES), the rest of the stream goes unrecorded, said on the run. A burst is
# decoded only once it pauses, so the run's event limit does not stop it sooner.
MEMORY_BACKLOG_BYTES = 8 * 1024 * 1024
MIB = 1024 * 1024
SPILL_MAX_BYTES = 256 * 1024 * 1024
STREAM_MARKER = "text/event-stream"
CLIENT_LEFT = {"message": "the client disconnected; the upstream request was closed (a background response "
                          "is cancelled)", "code": "client_disconnected"}
UNSTARTED_BODY_S = 30.0  # a relay whose body was never asked for after this long: its client left
# A run with a reserved id: its row is inserted right after the answer's head and first body bytes
# are given to the client, or this long after the request was sent on when they have not come by then
# (a provider slow to its head or first token, a whole answer still being generated), so the run is
# seen (live wall, API, recovery) while the provider works. Long enough for a fast provider's first
# bytes to go first (the insert is ~1 ms of the loop's CPU on SQLite), short against any slow one's.
ROW_AFTER_SEND_S = 0.005


# Marks where a request's time goes (dashboard/api/gateway.py sets it when STREAMSCOPE_GATEWAY_TIMINGS is on).
timing: contextvars.ContextVar[Callable[[str], None] | None] = contextvars.ContextVar("gateway_timing", default=None)


def _mark(what: str) -> None:
    mark = timing.get()
    if mark is not None:
        mark(what)


class UnknownRoute(LookupError):
    pass


@dataclass
class GatewayRequest:
    provider: Provider
    method: str
    path: str  # after /v1/, e.g. "responses" or "responses/resp_1/cancel"
    query: str  # the raw query string
    body: bytes
    owner: Any
    # The caller's own upstream key, for providers with gateway_key "caller". Never stored.
    caller_key: str | None = field(default=None, repr=False)
    headers: dict[str, str] = field(default_factory=dict)  # the client's, lower-cased names


@dataclass
class GatewayAnswer:
    status: int
    headers: dict[str, str]
    body: bytes = b""
    relay: StreamRelay | None = None  # an event stream, relayed as it arrives
    run_id: int | None = None


def route_kind(method: str, path: str) -> str:
    for route_method, pattern, kind in ROUTES:
        if route_method == method and pattern.fullmatch(path):
            return kind
    raise UnknownRoute(f"Unknown request URL: {method} /v1/{path}")


def openai_error_body(message: str, kind: str, code: str | None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": None, "code": code}}).encode()


# --- the upstream side -----------------------------------------------------------------------

_clients = PerLoop(lambda: make_client(settings.STREAMSCOPE_CONNECT_TIMEOUT_S, settings.STREAMSCOPE_STALL_TIMEOUT_S))


def _client() -> httpx.AsyncClient:
    """One pooled client per event loop (the server's), shared by every gateway request."""
    return _clients.get()


def upstream_headers(request: GatewayRequest) -> dict[str, str]:
    headers = {"Accept-Encoding": "identity"}  # the bytes the client gets are the bytes sent
    headers["Accept"] = request.headers.get("accept") or "application/json, text/event-stream"
    if request.body:
        headers["Content-Type"] = "application/json"
    for name in FORWARDED_REQUEST_HEADERS:
        if name in request.headers:
            headers[name] = request.headers[name]
    key = request.caller_key if request.provider.gateway_key == "caller" else request.provider.api_key()
    if key:
        headers["Authorization"] = key if key.lower().startswith("bearer ") else f"Bearer {key}"
    return headers


def _passed_headers(response: httpx.Response | LegResponse) -> dict[str, str]:
    return {name: value for name, value in response.headers.items()
            if name in PASSED_RESPONSE_HEADERS or name.startswith("x-ratelimit-")}


def _transport_failure(exc: httpx.HTTPError, provider: Provider) -> UpstreamError:
    if isinstance(exc, httpx.TimeoutException):
        return UpstreamError(f"the provider {provider.name!r} did not answer in time", "upstream_timeout")
    return UpstreamError(f"could not reach the provider {provider.name!r}: {exc!r}", "connect_error")


# --- forwarding --------------------------------------------------------------------------------

async def forward(request: GatewayRequest) -> GatewayAnswer:
    """Send the request on and return the answer to give the client (streamed or whole)."""
    kind = route_kind(request.method, request.path)
    params = dict(_query_pairs(request.query))
    if kind == "pass" or (kind == "resume" and params.get("stream") != "true"):
        return await _pass_through(request)
    try:
        body = json.loads(request.body) if request.body else {}
    except ValueError:
        body = None
    if not isinstance(body, dict):
        return GatewayAnswer(400, {"content-type": "application/json"},
                             openai_error_body("The body must be a JSON object.", "invalid_request_error", "bad_json"))
    protocol = "chat" if request.path == "chat/completions" else "responses"
    fields = _run_fields(request, body, kind, params)
    rules = await moderation_rules()
    _mark("rules")
    recorder: GatewayRecorder | None = None
    pending: PendingRow | None = None
    creating: asyncio.Future[Run]

    def recording(run: Run) -> GatewayRecorder:
        """The run's recorder, begun now if it was not (a run created beside the request)."""
        nonlocal recorder
        if recorder is None:
            recorder = _recorder(run, protocol, fields)
            recorder.begin(run, rules)  # no input stop rule matched this input (checked above)
        return recorder

    reserved = None if kind == "resume" else take_reserved_id()  # a resumed stream reads the original run first
    if reserved is not None and not _input_stopped(fields, rules):
        # The run's id is reserved ahead: its row is inserted once the client has the answer's head
        # and first bytes (StreamRelay); a whole answer's or an error's, by its end (a task of its
        # own, as the answer goes out: GatewayRecorder.end inserts it first).
        run = _new_run(request, fields, fields.model)
        run.pk = reserved
        pending = PendingRow(run)
        recorder = _recorder(run, protocol, fields, pending)
        recorder.begin(run, rules)  # no input stop rule matched this input (checked above)
        creating = asyncio.get_running_loop().create_future()
        creating.set_result(run)
    elif _input_stopped(fields, rules):
        # An input stop rule matches: the run is created and the request refused before it is sent.
        run = await database_sync_to_async(_create_run)(request, fields, kind)
        recorder = _recorder(run, protocol, fields)
        try:
            recorder.begin(run, rules)
        except ModerationStopped as exc:
            return _refused(recorder, run, exc)
        creating = asyncio.get_running_loop().create_future()
        creating.set_result(run)
    else:
        # Nothing can refuse it: the run is created while the request is on its way (the database
        # trip is out of the time to first byte). The run exists before a byte of the answer is
        # read, so the recorder misses nothing.
        creating = asyncio.ensure_future(_create_run_beside(request, fields, kind))

        def begin_once_created(created: asyncio.Future[Run]) -> None:
            # At once, not after the answer's head: the flush clock beats for a registered run, and
            # a run silent while a provider works on a whole answer for minutes is another
            # process's to take over (streams/live/recovery.py).
            if not created.cancelled() and created.exception() is None:
                recording(created.result())

        creating.add_done_callback(begin_once_created)
    headers = upstream_headers(request)
    t0 = time.monotonic()
    response: httpx.Response | LegResponse | None = None
    failure: UpstreamError | None = None
    if pending is not None and recorder is not None:
        _row_after(recorder, ROW_AFTER_SEND_S)  # unless the head and first bytes come first
    try:
        response = await _send(request, headers)
        _mark("upstream_headers")
    except asyncio.CancelledError:  # the client left while the provider was still to answer
        run = await creating  # cancelled once already: the run is still created and ended
        recorder = recording(run)
        recorder.t0 = t0
        _end_later(recorder, RunStatus.CANCELLED, dict(CLIENT_LEFT))
        raise
    except httpx.HTTPError as exc:
        failure = _transport_failure(exc, request.provider)
    except Exception as exc:  # ours, not the provider's: the run ends failed (a recorder must not beat for good)
        try:
            run = await creating
        except BaseException:
            raise exc from None
        recorder = recording(run)
        recorder.t0 = t0
        _end_later(recorder, RunStatus.FAILED, {"message": f"the gateway failed: {exc!r}", "code": "internal"})
        raise
    try:
        run = await creating
        _mark("run_created")
    except BaseException:
        if response is not None:  # the run could not be created: nothing is relayed unrecorded
            await response.aclose()
        raise
    recorder = recording(run)
    recorder.t0 = t0
    if pending is None:
        _spawn(recorder.announce(), f"gateway-announce-{run.pk}")  # beside the request, not before it
    if failure is not None:
        _end_later(recorder, RunStatus.FAILED, failure.as_dict())
        status = 504 if failure.code == "upstream_timeout" else 502
        return GatewayAnswer(status, {"content-type": "application/json", "x-streamscope-run": str(run.pk)},
                             openai_error_body(failure.message, "server_error", failure.code), run_id=run.pk)
    assert response is not None
    passed = {**_passed_headers(response), "x-streamscope-run": str(run.pk)}
    content_type = response.headers.get("content-type", "")
    if response.status_code < 400 and content_type.split(";")[0].strip().lower() == STREAM_MARKER:
        relay = StreamRelay(run, recorder, response, request, headers)
        return GatewayAnswer(response.status_code, passed, relay=relay, run_id=run.pk)
    try:
        whole = await response.aread()
    except httpx.HTTPError as exc:
        failure = _transport_failure(exc, request.provider)
        _end_later(recorder, RunStatus.FAILED, failure.as_dict())
        return GatewayAnswer(502, {"content-type": "application/json", "x-streamscope-run": str(run.pk)},
                             openai_error_body(failure.message, "server_error", failure.code), run_id=run.pk)
    finally:
        await response.aclose()
    if response.status_code >= 400:
        error = _http_error(response.status_code, whole)
        _end_later(recorder, RunStatus.FAILED, error)
    else:
        status, error = recorder.take_body(whole, recorder._now())
        _end_later(recorder, status, error)
    return GatewayAnswer(response.status_code, passed, whole, run_id=run.pk)


async def _send(request: GatewayRequest, headers: dict[str, str]) -> httpx.Response | LegResponse:
    """The request on to the provider; the answer once its head is read, its body to be read."""
    base = request.provider.base_url
    if leg.can_send(base, request.path, request.query, headers):
        return await leg.send(base, request.method, request.path, request.query, headers, request.body or None,
                              settings.STREAMSCOPE_CONNECT_TIMEOUT_S, settings.STREAMSCOPE_STALL_TIMEOUT_S)
    client = _client()
    url = f"{base.rstrip('/')}/{request.path}"
    upstream = client.build_request(request.method, url, content=request.body or None, headers=headers,
                                    params=request.query or None)
    return await client.send(upstream, stream=True)


async def _pass_through(request: GatewayRequest) -> GatewayAnswer:
    client = _client()
    url = f"{request.provider.base_url.rstrip('/')}/{request.path}"
    upstream = client.build_request(request.method, url, content=request.body or None,
                                    headers=upstream_headers(request), params=request.query or None)
    try:
        response = await client.send(upstream)
    except httpx.HTTPError as exc:
        failure = _transport_failure(exc, request.provider)
        return GatewayAnswer(504 if failure.code == "upstream_timeout" else 502, {"content-type": "application/json"},
                             openai_error_body(failure.message, "server_error", failure.code))
    return GatewayAnswer(response.status_code, _passed_headers(response), response.content)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    return list(httpx.QueryParams(query).multi_items())


@dataclass
class _RunFields:
    model: str
    stored: Any  # the request as stored on the run
    background: bool
    response_id: str = ""  # a resumed stream's: the original run's model is read with the run


def _run_fields(request: GatewayRequest, body: dict[str, Any], kind: str, params: dict[str, str]) -> _RunFields:
    model = body.get("model") if isinstance(body.get("model"), str) else ""
    background = bool(body.get("background"))
    response_id = ""
    if kind == "resume":
        # A resumed stream: what was asked is the original run's; this run holds the rest.
        response_id = request.path.split("/")[1]
        body = {"resume": response_id, **{k: v for k, v in params.items() if k != "stream"}, "stream": True}
        background = True
    try:
        stored = clean_json(body)
    except BadValue as exc:
        stored = {"note": f"the request body was not stored: {exc}"}
    return _RunFields(model, stored, background, response_id)


def _input_stopped(fields: _RunFields, rules: list[ModerationRule]) -> bool:
    """Whether an input stop rule refuses this request (read from the request, no database)."""
    if not any(rule.scope == ModerationRule.Scope.INPUT and rule.action == ModerationRule.Action.STOP
               for rule in rules):
        return False
    try:
        LiveModerator(0).start(Run(request=fields.stored), rules)
    except ModerationStopped:
        return True
    return False


def _create_run(request: GatewayRequest, fields: _RunFields, kind: str) -> Run:
    """The run, created ``streaming`` (its request goes out beside or right after this)."""
    model = fields.model
    if kind == "resume":
        earlier = (Run.objects.filter(owner=request.owner, source=RunSource.GATEWAY, response_id=fields.response_id)
                   .order_by("created_at").first())
        model = earlier.model if earlier else ""
    run = _new_run(request, fields, model)
    run.save(force_insert=True)
    return run


def _new_run(request: GatewayRequest, fields: _RunFields, model: str) -> Run:
    now = timezone.now()
    return Run(
        owner=request.owner, provider=request.provider.name, model=model[:200], request=fields.stored,
        status=RunStatus.STREAMING, background=fields.background, source=RunSource.GATEWAY,
        started_at=now, worker=WORKER_NAME, heartbeat_at=now,
    )


async def _create_run_beside(request: GatewayRequest, fields: _RunFields, kind: str) -> Run:
    """:func:`_create_run` as a task beside the upstream request (its first step runs once the request
    is written), for a run without a reserved id (a loop's first request or two, a resumed stream),
    without a hop to the database thread where it can (streams/gateway/run_row.py): on SQLite on this
    thread's own connection, on PostgreSQL on the event loop's; else, or when SQLite's write lock is
    held, on the database thread."""
    if kind != "resume":  # a resumed stream reads the original run first: the database thread's way
        _mark("insert_started")
        run = _new_run(request, fields, fields.model)
        if insert_here(run):
            _mark("run_inserted")
            return run
        try:
            inserted = await insert_on_loop(run)
        except MaybeInserted:
            return await database_sync_to_async(_adopt_or_insert)(run)
        if inserted:
            _mark("run_inserted")
            return run
    return await database_sync_to_async(_create_run)(request, fields, kind)


def _adopt_or_insert(run: Run) -> Run:
    """``run``'s row if an unanswered INSERT made it, else ``run`` inserted now (the one gap left:
    streams/gateway/run_row.py). A gateway run is told apart by its owner, worker and start time (to
    the microsecond)."""
    made = Run.objects.filter(owner_id=run.owner_id, source=RunSource.GATEWAY, worker=run.worker,
                              started_at=run.started_at).first()
    if made is not None:
        return made
    run.save(force_insert=True)
    return run


def _recorder(run: Run, protocol: str, fields: _RunFields, pending: PendingRow | None = None) -> GatewayRecorder:
    recorder = GatewayRecorder(run.pk, protocol)
    recorder.pending_row = pending  # its row is still to be inserted (a reserved id)
    if unflushed(run):  # a crash of PostgreSQL may lose its row: the recorder makes it again
        recorder.unflushed_row = run
    if fields.response_id:  # a resumed stream
        recorder.response_id = fields.response_id
    return recorder


def _refused(recorder: GatewayRecorder, run: Run, exc: ModerationStopped) -> GatewayAnswer:
    _end_later(recorder, RunStatus.CANCELLED, exc.error())
    return GatewayAnswer(400, {"content-type": "application/json", "x-streamscope-run": str(run.pk)},
                         openai_error_body(str(exc), "invalid_request_error", "moderation_stopped"), run_id=run.pk)


# --- the moderation rules, read once a while rather than per request ---------------------------

RULES_TTL_S = 1.0  # a rule saved in another process applies to this one's requests within this long
_rules: tuple[float, int, list[ModerationRule]] | None = None  # (read at, generation, rules)
_rules_generation = 0


def forget_rules(**kwargs: Any) -> None:
    """A rule was saved or deleted in this process: the next request reads them again."""
    global _rules, _rules_generation
    _rules_generation += 1
    _rules = None


post_save.connect(forget_rules, sender=ModerationRule, dispatch_uid="gateway-forget-rules-save")
post_delete.connect(forget_rules, sender=ModerationRule, dispatch_uid="gateway-forget-rules-delete")


async def moderation_rules() -> list[ModerationRule]:
    """The enabled rules: this process's copy, read again after RULES_TTL_S or a local change.

    While gateway requests come (within RULES_KEPT_FRESH_S of the last), the copy is re-read in the
    background every half RULES_TTL_S, so a request finds it fresh instead of waiting for a
    database trip (a hop to the database thread and back: milliseconds on a busy machine)."""
    global _rules_asked
    _rules_asked = time.monotonic()
    _keep_fresh()
    cached = _rules
    if cached is not None and time.monotonic() - cached[0] < RULES_TTL_S and cached[1] == _rules_generation:
        return cached[2]
    return await _read_rules()


async def _read_rules() -> list[ModerationRule]:
    global _rules
    generation, read_at = _rules_generation, time.monotonic()
    rules = await database_sync_to_async(enabled_rules)()
    if generation == _rules_generation:  # not forgotten while being read
        _rules = (read_at, generation, rules)
    return rules


RULES_KEPT_FRESH_S = 60.0
_rules_asked = 0.0  # when a request last asked for the rules
_refresh_due: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()  # loops with a re-read planned


def _keep_fresh() -> None:
    loop = asyncio.get_running_loop()
    if loop not in _refresh_due:
        _refresh_due.add(loop)
        loop.call_later(RULES_TTL_S / 2, _refresh, loop)


def _refresh(loop: asyncio.AbstractEventLoop) -> None:
    _refresh_due.discard(loop)
    if time.monotonic() - _rules_asked < RULES_KEPT_FRESH_S:
        _spawn(_refresh_rules(), "gateway-rules")


async def _refresh_rules() -> None:
    try:
        await _read_rules()
    except Exception as exc:  # noqa: BLE001 - a request reads them itself when the copy is old
        log.warning("reading the moderation rules failed: %r", exc)
        return
    _keep_fresh()


def _http_error(status: int, body: bytes) -> dict[str, Any]:
    text = body[:64 * 1024].decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text)
    except ValueError:
        parsed = text
    detail = parsed.get("error") if isinstance(parsed, dict) else None
    message = detail.get("message") if isinstance(detail, dict) else None
    reason = httpx.codes.get_reason_phrase(status) or "error"
    return {"message": f"upstream answered HTTP {status} {reason}" + (f": {message}" if message else ""),
            "code": "http_error", "http_status": status, "body": parsed}


# --- a reserved id's row ----------------------------------------------------------------------

def _row_after(recorder: GatewayRecorder, delay: float) -> None:
    """The pending row inserted ``delay`` seconds from now, unless :func:`_row_now` comes first."""
    if recorder.pending_row is not None and recorder.row_timer is None:
        recorder.row_timer = asyncio.get_running_loop().call_later(delay, _row_now, recorder)


def _row_now(recorder: GatewayRecorder) -> None:
    """The pending row, in a task of its own (once): the relay goes on meanwhile, and the recorder's
    first write and its end wait for it (GatewayRecorder.ensure_row)."""
    if recorder.row_timer is not None:
        recorder.row_timer.cancel()
        recorder.row_timer = None
        _spawn(recorder.insert_row(), f"gateway-row-{recorder.run_id}")


# --- ending runs ---------------------------------------------------------------------------------

_concluding: set[asyncio.Task] = set()  # strong references to the tasks ending runs


def _end_later(recorder: GatewayRecorder, status: str, error: Any) -> None:
    """End the run in a task of its own: the client's answer never waits for the store."""
    _spawn(recorder.end(status, error), f"gateway-end-{recorder.run_id}")


def _spawn(coroutine: Any, name: str) -> None:
    # A fresh context: the request's (and its per-request database thread) ends before this does.
    task = asyncio.get_running_loop().create_task(coroutine, name=name, context=contextvars.Context())
    _concluding.add(task)
    task.add_done_callback(_concluding.discard)


# --- relaying a stream -------------------------------------------------------------------------

_END = object()
Send = Callable[[bytes], Awaitable[Any]]  # gives one chunk to the client
_SEQUENCE_KEY = b'"sequence_number":'
SEQ_SPAN = 48  # bytes either side of a read's edge that hold a cut "sequence_number": N whole


def last_sequence_number(chunk: bytes) -> int | None:
    """The last whole ``"sequence_number": N`` in forwarded bytes (a Responses event's own: in a JSON
    string the quotes would be escaped), or None. A number the chunk cuts off is not taken."""
    end = len(chunk)
    while (at := chunk.rfind(_SEQUENCE_KEY, 0, end)) >= 0:
        i = at + len(_SEQUENCE_KEY)
        while i < len(chunk) and chunk[i] in b" \t":
            i += 1
        j = i
        while j < len(chunk) and 48 <= chunk[j] <= 57:
            j += 1
        if i < j < len(chunk):
            return int(chunk[i:j])
        end = at
    return None


class StreamRelay:
    """One event stream: upstream → client (first) → recorder; ends on the upstream's end, a stop
    (dashboard or moderation rule: a well-formed ``error`` event ends the client's stream) or the
    client leaving (the upstream is closed, a background response cancelled).

    :meth:`relay` gives each chunk to the client straight from the loop that reads it (the raw
    ASGI path, dashboard/api/gateway.py, sends it on the connection); :meth:`body` is the same
    relay as an iterator, for Django's ``StreamingHttpResponse``."""

    def __init__(self, run: Run, recorder: GatewayRecorder, response: httpx.Response | LegResponse,
                 request: GatewayRequest, headers: dict[str, str]) -> None:
        self.run = run
        self.recorder = recorder
        self.response = response
        self.request = request
        self._headers = headers  # may hold the caller's key: memory only, used for the cancel call
        self.pump: asyncio.Task | None = None
        self.recording: asyncio.Task | None = None  # the recorder, behind the relay (see _record)
        # (chunk, received at) given to the client, not yet recorded; its excess in a temporary file
        self.backlog = Backlog(MEMORY_BACKLOG_BYTES, SPILL_MAX_BYTES)
        self.unrecorded_why = ""  # why the rest of the stream is not held for the recorder, once it is not
        self.pump_finished = False
        self.ended_at: float | None = None  # when the upstream's body ended
        self.last_arrival = NEVER  # when the last chunk arrived (the recorder's clock, ms)
        self.bursting = False  # the last chunk came faster than BURST_BYTES_PER_MS after the one before
        self._wake = asyncio.Event()  # chunks (or the end) for the recorder
        self.stopped: str | None = None  # why the dashboard stopped it
        self.moderation_error: dict[str, Any] | None = None
        self.upstream_error: dict[str, Any] | None = None
        self.at_boundary = True  # the bytes given so far end between two events
        self.last_sent_seq: int | None = None  # the last sequence_number the client was given
        self._seq_tail = b""  # the end of the last chunk sent, for a number a read cut in two
        self._send_last: Send | None = None  # the relay's last words (a stop's error event), past any pacing
        self.started = False
        stoppers.register(run.pk, self.stop)
        # A client gone before the server began the body never runs its cleanup: end it here.
        self._watchdog = asyncio.get_running_loop().call_later(UNSTARTED_BODY_S, self._never_started)

    def _never_started(self) -> None:
        if not self.started:
            _spawn(self._abandon(), f"gateway-abandoned-{self.run.pk}")

    async def _abandon(self) -> None:
        await self.response.aclose()
        await self._conclude("client_left")

    def stop(self, reason: str) -> None:
        """Stop from the dashboard (streams.live.control.cancel_run): end the client's stream now."""
        if self.stopped is None:
            self.stopped = reason
            if self.pump is not None:
                self.pump.cancel()  # relay() then sends the error event

    async def relay(self, send: Send, send_last: Send | None = None) -> None:
        """Give the stream to the client through ``send`` until it ends (a stop's error event through
        ``send_last`` when given: ``send`` may wait for a slow client). Cancelling this (the client
        left) closes the upstream and ends the run ``cancelled``."""
        self.started = True
        self._watchdog.cancel()
        self._send_last = send_last or send
        ending = "client_left"
        try:
            if self.stopped is None:
                self.pump = asyncio.get_running_loop().create_task(self._pump(send), name=f"gateway-{self.run.pk}")
                await asyncio.wait([self.pump])  # a stop cancels the pump, not this
            if self.pump is None or self.pump.cancelled():
                ending = "dashboard"
                # At once: numbered after the last event sent, from the bytes sent (the recorder may be
                # far behind a burst); the run's end waits for the recording (_conclude).
                await self._send_last(self._separator() + self._error_frame(self.stopped or "", "cancelled_by_user"))
            else:
                ending = self.pump.result()
        finally:
            # Runs on every end, also when the client left (this was cancelled).
            if self.pump is not None and not self.pump.done():
                self.pump.cancel()
            _spawn(self._conclude(ending), f"gateway-end-{self.run.pk}")

    async def body(self) -> AsyncIterator[bytes]:
        """The relay as an iterator: a task relays into a short queue (at most QUEUE_CHUNKS read
        ahead of a slow client) that this drains; closing it early is the client leaving. A stop's
        last event is set aside, not queued, and follows the queued chunks: behind a slow client the
        queue can stay full, and the run's end must not wait for the client to take it."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=QUEUE_CHUNKS)
        last: list[bytes] = []

        async def send_last(chunk: bytes) -> None:
            last.append(chunk)

        relaying = asyncio.get_running_loop().create_task(self._relay_into(queue, send_last),
                                                          name=f"gateway-relay-{self.run.pk}")
        try:
            while (item := await queue.get()) is not _END:
                yield item
            for chunk in last:
                yield chunk
        finally:
            if not relaying.done():
                relaying.cancel()

    async def _relay_into(self, queue: asyncio.Queue[Any], send_last: Send) -> None:
        try:
            await self.relay(queue.put, send_last)
        except Exception:
            log.exception("run %s (gateway): relaying failed", self.run.pk)
        await queue.put(_END)

    async def _pump(self, send: Send) -> str:
        """Read the upstream; each chunk goes to the client, then to the recorder. Returns how it ended.

        The recorder runs behind the relay (a task of its own, :meth:`_record`), so recording
        never slows the client's stream: a burst is relayed at the upstream's pace and recorded as
        the process can, each event stamped with the time its chunk arrived. With a moderation
        stop rule on the output, each chunk is recorded before the next is read instead, so the
        stop comes right after the chunk that matched."""
        recorder = self.recorder
        inline = self._output_stop_rules()
        if not inline:
            loop = asyncio.get_running_loop()
            self.recording = loop.create_task(self._record(), name=f"gateway-record-{self.run.pk}")
        try:
            async for chunk in iter_body(self.response, settings.STREAMSCOPE_STALL_TIMEOUT_S):
                t = recorder._now()
                await send(chunk)  # the client first (nothing after its write can be cancelled before this)
                if recorder.row_timer is not None:  # the head and first bytes are out: the row now
                    _row_now(recorder)
                self.at_boundary = chunk.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))
                seq = last_sequence_number(chunk)
                if seq is None and self._seq_tail:  # a number the previous read cut, whole now
                    seq = last_sequence_number(self._seq_tail + chunk[:SEQ_SPAN])
                if seq is not None:
                    self.last_sent_seq = seq
                self._seq_tail = chunk[-SEQ_SPAN:]
                if inline:
                    recorder.take(chunk, t)
                    if len(recorder.buffer) >= recorder.flush_max * FLUSHES_AHEAD:
                        await recorder.keep_pace()  # recorded before the next read anyway (moderation)
                    continue
                if not self.unrecorded_why and recorder.recording:
                    self._hold(chunk, t)
                if self.last_arrival == NEVER:
                    bursting = len(chunk) >= FIRST_CHUNK_BURST_BYTES
                else:
                    bursting = len(chunk) > BURST_BYTES_PER_MS * (t - self.last_arrival)
                self.last_arrival = t
                if not (bursting and self.bursting) or len(self.backlog) == 1:
                    # Paced, a burst's first chunk, or the first since the recorder caught up (it then
                    # waits for the pause by itself): no timer per chunk.
                    self._wake.set()
                self.bursting = bursting
            self.ended_at = recorder.stream_ended_at = recorder._now()
            if inline:
                recorder.take_end(self.ended_at)
        except ModerationStopped as exc:
            self.moderation_error = exc.error()
            await (self._send_last or send)(self._separator() + self._error_frame(str(exc), "moderation_stopped"))
            return "moderation"
        except UpstreamError as exc:  # dropped or stalled mid-stream: the client's stream ends too
            self.upstream_error = exc.as_dict()
        finally:
            self.pump_finished = True
            self._wake.set()
            await self.response.aclose()
        return "upstream_end"

    def _hold(self, chunk: bytes, t: float) -> None:
        """The chunk to the backlog, for the recorder; past what the backlog may hold (or once its
        file fails), the rest of the stream goes unrecorded: the client's stream never waits."""
        try:
            if self.backlog.append(chunk, t):
                return
            self.unrecorded_why = (f"a burst outgrew what the gateway holds for recording while it lasts "
                                   f"({SPILL_MAX_BYTES // MIB} MiB a stream, {PROCESS_SPILL_MAX_BYTES // MIB} MiB "
                                   f"for all at once)")
        except SpillFailed as exc:
            self.unrecorded_why = str(exc)
        self._wake.set()

    def _output_stop_rules(self) -> bool:
        return any(rule.action == ModerationRule.Action.STOP and rule.scope != ModerationRule.Scope.INPUT
                   for rule in self.recorder.moderator.rules.values())

    async def _record(self) -> None:
        """Record what the relay gave the client, in order, a slice at a time; ends once the relay
        has finished and everything it gave is recorded. A burst is recorded once it pauses
        (BURST_PAUSE_MS) or ends, however long: its backlog waits in memory and a temporary file."""
        recorder = self.recorder
        backlog = self.backlog
        done = 0
        try:
            while True:
                if not backlog:
                    if self.pump_finished or self.unrecorded_why:
                        break
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                if self.bursting and not self.pump_finished:
                    quiet = recorder._now() - self.last_arrival
                    if quiet < BURST_PAUSE_MS:
                        self._wake.clear()  # set again by the end or a stop
                        with contextlib.suppress(TimeoutError):
                            async with asyncio.timeout((BURST_PAUSE_MS - quiet) / 1000.0):
                                await self._wake.wait()
                        continue
                if not recorder.recording:
                    break  # it stopped itself (a limit): what is held would be read back for nothing
                chunk, t = backlog.popleft()
                recorder.take(chunk, t)  # raises nothing here: no stop rule on the output (else inline)
                if len(recorder.buffer) >= recorder.flush_max * FLUSHES_AHEAD:
                    await recorder.keep_pace()  # the database is behind: the backlog holds the rest
                done += len(chunk)
                if done >= RECORD_SLICE_BYTES:
                    done = 0
                    await asyncio.sleep(0)  # the relay's turn
        except SpillFailed as exc:  # what the file held is lost, and so is what follows it
            self.unrecorded_why = self.unrecorded_why or str(exc)
            recorder._stop_recording(f"{exc}: recording stopped after {recorder.next_seq} events; "
                                     f"the client's stream went on unrecorded")
        finally:
            backlog.close()
        if self.unrecorded_why:
            if recorder.recording:
                recorder._stop_recording(f"{self.unrecorded_why}: recording stopped after {recorder.next_seq} "
                                         f"events; the client's stream went on unrecorded")
        elif self.ended_at is not None:
            recorder.take_end(self.ended_at)

    async def _recorded(self) -> None:
        """Wait until the recorder has taken everything the client was given (the relay has ended).
        Cancelling the waiter (the client left meanwhile) leaves the recorder running: the end
        still waits for it, so the run keeps every event the client was sent."""
        if self.recording is not None:
            await asyncio.wait([self.recording])

    def _separator(self) -> bytes:
        # A stop between two chunks of one event: end that event first (the client sees it broken).
        return b"" if self.at_boundary else b"\n\n"

    def _error_frame(self, message: str, code: str) -> bytes:
        error = {"type": "streamscope_stopped", "code": code, "message": message, "param": None}
        if self.recorder.protocol == "chat":
            return b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
        last = self.last_sent_seq
        payload = {"type": "error", "sequence_number": (last + 1) if last is not None else 0, "error": error}
        return b"event: error\ndata: " + json.dumps(payload).encode() + b"\n\n"

    async def _conclude(self, ending: str) -> None:
        stoppers.unregister(self.run.pk)
        try:
            if self.pump is not None and not self.pump.done():
                self.pump.cancel()
                await asyncio.gather(self.pump, return_exceptions=True)
            cancel = ending != "upstream_end" and self.run.background
            if cancel and self.recorder.response_id:  # known: the provider stops now, not after the recording
                await self._cancel_upstream()
                cancel = False
            await self._recorded()
            if cancel and self.recorder.response_id:
                await self._cancel_upstream()
            if ending == "client_left":
                status, error = RunStatus.CANCELLED, dict(CLIENT_LEFT)
            elif ending == "dashboard":
                status, error = RunStatus.CANCELLED, None
            elif ending == "moderation":
                status, error = RunStatus.CANCELLED, self.moderation_error
            elif self.upstream_error is not None:
                status, error = RunStatus.FAILED, self.upstream_error
            elif not self.recorder.recording:
                # The client got the whole stream, but the record cannot say how it ended:
                # failed, with the recorder's note of what was lost as the error.
                status, error = RunStatus.FAILED, None
            else:
                status, error = self.recorder._outcome(self.recorder.protocol)
        except Exception as exc:
            log.exception("run %s (gateway): ending it failed", self.run.pk)
            status, error = RunStatus.FAILED, {"message": f"internal error: {exc!r}", "code": "internal_error"}
        await self.recorder.end(status, error)

    async def _cancel_upstream(self) -> None:
        url = f"{self.request.provider.base_url.rstrip('/')}/responses/{self.recorder.response_id}/cancel"
        headers = {k: v for k, v in self._headers.items() if k in ("Authorization", "Accept-Encoding")}
        try:
            await _client().post(url, headers=headers, timeout=5.0)
        except httpx.HTTPError as exc:
            log.warning("run %s (gateway): cancelling the upstream response failed: %r", self.run.pk, exc)
