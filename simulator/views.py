"""HTTP face of the simulator: the OpenAI-compatible endpoints, their timing and their faults.

Views parse the request, ask :mod:`.scenarios` / :mod:`.chat` for a plan, and serve it:
paced SSE for streams, one JSON object otherwise. HTTP-level faults live here: a stall before
the first byte (``sim_stall_ms``), a stall after N events (``sim_stall_after``) and a dropped
connection after N events (``sim_drop_after``, see :mod:`.connection`). Errors are always
OpenAI-shaped JSON.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt

from simulator.background import STORE, StoredResponse, start_background
from simulator.chat import completion_from_chunks, plan_chat
from simulator.connection import ConnectionNotFound, drop_connection
from simulator.errors import APIErrorSpec, SimulatorError, invalid, not_found
from simulator.moderation import moderate
from simulator.pacing import encode_data_only, encode_sse, play, to_json
from simulator.playback import Playback
from simulator.request import checked_body, parse_request
from simulator.scenarios import SCENARIOS, SEEDED_EPOCH, Plan, get_scenario, plan_response

logger = logging.getLogger("simulator")

# A request without stream: true waits as long as its stream would have taken, up to this.
MAX_BLOCKING_WAIT_S = 600.0
# Stall after N events (sim_stall_after) lasts this long unless sim_stall_ms says otherwise.
DEFAULT_STALL_MS = 120_000.0
DONE_MARKER = b"data: [DONE]\n\n"

View = Callable[..., Awaitable[HttpResponse]]


class SimulatedDropFailed(RuntimeError):
    """A drop was asked for but the connection's socket could not be found."""


def _request_id() -> str:
    return "req_" + secrets.token_hex(16)


def _headers(response: HttpResponse, started: float) -> HttpResponse:
    response["x-request-id"] = _request_id()
    response["openai-version"] = "2020-10-01"
    response["openai-processing-ms"] = str(round((time.monotonic() - started) * 1000))
    return response


def _json(data: Any, started: float, status: int = 200) -> JsonResponse:
    response = JsonResponse(
        data, status=status, safe=False, json_dumps_params={"ensure_ascii": False}
    )
    return _headers(response, started)  # type: ignore[return-value]


def _error(spec: APIErrorSpec, started: float) -> JsonResponse:
    response = _json(spec.body(), started, spec.status)
    for name, value in spec.headers.items():
        response[name] = value
    return response


def openai_api(*methods: str) -> Callable[[View], View]:
    """Allow ``methods`` only and turn :class:`SimulatorError` into the OpenAI error JSON."""

    def decorate(view: View) -> View:
        @functools.wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            started = time.monotonic()
            if request.method not in methods:
                spec = APIErrorSpec(
                    405, f"Invalid method for URL ({request.method} {request.path})"
                )
                return _error(spec, started)
            try:
                response = await view(request, *args, **kwargs)
            except SimulatorError as exc:
                return _error(exc.spec, started)
            return _headers(response, started)

        return wrapper

    return decorate


def _body(request: HttpRequest) -> Any:
    try:
        body = json.loads(request.body or b"null")
    except (ValueError, RecursionError):
        raise invalid(
            "We could not parse the JSON body of your request. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON."
        ) from None
    return checked_body(body)


def _fresh(seeded: bool) -> dict[str, Any]:
    """Without ``sim_seed``: fresh ids and the real clock (the content still follows the input)."""
    return {} if seeded else {"id_seed": secrets.token_hex(16), "created_at": int(time.time())}


# ----- streaming and faults --------------------------------------------------------------------
async def _drop(request: HttpRequest) -> None:
    await asyncio.sleep(0.05)  # let the server flush what was already sent
    try:
        drop_connection(request.scope)  # type: ignore[attr-defined]
    except ConnectionNotFound as exc:
        logger.error("simulated drop failed: %s", exc)
        raise SimulatedDropFailed(str(exc)) from exc
    # The server sees the dead socket and cancels this response; wait for that.
    await asyncio.sleep(10)


def _without_obfuscation(frame: bytes) -> bytes:
    head, _, data = frame.rstrip(b"\n").rpartition(b"data: ")
    event = json.loads(data)
    event.pop("obfuscation", None)
    return head + b"data: " + to_json(event).encode() + b"\n\n"


async def _deliver(
    request: HttpRequest,
    chunks: AsyncIterator[list[bytes]],
    *,
    drop_after: int | None = None,
    stall_after: int | None = None,
    stall_ms: float = 0.0,
    trailer: bytes = b"",
    strip_obfuscation: bool = False,
) -> AsyncIterator[bytes]:
    """Send frames, cutting the connection after ``drop_after`` or pausing after ``stall_after``."""
    sent = 0
    plain = drop_after is None and stall_after is None and not strip_obfuscation
    # aclosing: when the client leaves, the producer's cleanup runs now, not at garbage collection.
    async with aclosing(chunks) as produced:  # type: ignore[type-var]
        async for batch in produced:
            if plain:  # nothing to cut or rewrite: the usual stream, kept cheap
                yield b"".join(batch)
                continue
            frames = [_without_obfuscation(f) for f in batch] if strip_obfuscation else batch
            while frames:
                limits = (drop_after, stall_after)
                cuts = [limit - sent for limit in limits if limit is not None and limit >= sent]
                cut = min(cuts) if cuts else len(frames)
                head, frames = frames[:cut], frames[cut:]
                if head:
                    yield b"".join(head)
                    sent += len(head)
                if drop_after is not None and sent >= drop_after:
                    await _drop(request)
                    return
                if stall_after is not None and sent >= stall_after:
                    await asyncio.sleep((stall_ms or DEFAULT_STALL_MS) / 1000)
                    stall_after = None
    if trailer:
        yield trailer


def _event_stream(body: AsyncIterator[bytes]) -> StreamingHttpResponse:
    response = StreamingHttpResponse(body, content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    return response


async def _live(plan: Plan, entry: StoredResponse) -> AsyncIterator[list[bytes]]:
    """A non-background stream: generated while the client listens, stopped when it leaves."""
    try:
        async for batch in play(plan.steps, plan.pacing):
            entry.record(batch)
            yield [frame for _event, frame in batch]
    finally:
        _end_live(entry)


def _end_live(entry: StoredResponse) -> None:
    if not entry.terminal:
        # Closing a non-background stream stops generation, as on the real API.
        entry.base = {**entry.base, "status": "cancelled"}
    entry.finish()


# ----- endpoints -------------------------------------------------------------------------------
@login_not_required
@csrf_exempt
@openai_api("GET")
async def list_models(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"object": "list", "data": [_model(s.id) for s in SCENARIOS]})


def _model(model_id: str) -> dict[str, Any]:
    scenario = get_scenario(model_id)
    return {
        "id": scenario.id,
        "object": "model",
        "created": SEEDED_EPOCH,
        "owned_by": "streamscope-simulator",
        "description": scenario.description,
        "outcome": scenario.outcome,
    }


@login_not_required
@csrf_exempt
@openai_api("GET")
async def model_detail(request: HttpRequest, model_id: str) -> HttpResponse:
    try:
        return JsonResponse(_model(model_id))
    except SimulatorError:
        raise not_found(f"The model '{model_id}' does not exist", "model") from None


@login_not_required
@csrf_exempt
@openai_api("POST")
async def create_response(request: HttpRequest) -> HttpResponse:
    started = time.monotonic()
    sim_request = parse_request(_body(request))
    # Served as frames: a text delta's event is read for its type only (recording, the write path).
    plan = plan_response(sim_request, delta_events=False, **_fresh(sim_request.knobs.seed is not None))
    stall_before = plan.stall_ms if plan.stall_after is None else 0.0
    faults = {
        "drop_after": plan.drop_after,
        "stall_after": plan.stall_after,
        "stall_ms": plan.stall_ms,
    }
    if sim_request.background:
        entry = start_background(plan)
        queued = entry.response()  # what the real API answers: the response as it was created
        await asyncio.sleep(stall_before / 1000)
        if not sim_request.stream:
            return _json(queued, started)
        return _event_stream(_deliver(request, entry.follow(-1), **faults))
    await asyncio.sleep(stall_before / 1000)
    entry = StoredResponse(plan, background=False)
    STORE.add(entry)
    if sim_request.stream:
        response = _event_stream(_deliver(request, _live(plan, entry), **faults))
        if plan.drop_after is None and plan.stall_after is None:
            # Nothing to cut: the direct ASGI path may play it from the shared clock (simulator.playback).
            response.simulator_playback = Playback(  # type: ignore[attr-defined]
                plan.steps, plan.pacing, encode_sse, entry.record, functools.partial(_end_live, entry)
            )
        return response
    steps = list(plan.steps)
    await asyncio.sleep(min(plan.pacing.total_seconds(steps), MAX_BLOCKING_WAIT_S))
    final = steps[-1].event
    entry.record([(final, encode_sse(final))])
    entry.finish()
    if plan.drop_after is not None:
        await _drop(request)
    return JsonResponse(final["response"], json_dumps_params={"ensure_ascii": False})


def _stored(response_id: str) -> StoredResponse:
    entry = STORE.get(response_id)
    if entry is None:
        raise not_found(f"Response with id '{response_id}' not found.")
    return entry


@login_not_required
@csrf_exempt
@openai_api("GET", "DELETE")
async def response_detail(request: HttpRequest, response_id: str) -> HttpResponse:
    entry = _stored(response_id)
    if request.method == "DELETE":
        STORE.delete(response_id)
        return JsonResponse({"id": response_id, "object": "response", "deleted": True})
    if request.GET.get("stream", "false").lower() != "true":
        return JsonResponse(entry.response(), json_dumps_params={"ensure_ascii": False})
    if not entry.background:
        raise invalid(
            f"Response '{response_id}' was not created with background=true; only background "
            "responses can be streamed again.",
            "stream",
        )
    raw_after = request.GET.get("starting_after", "-1")
    try:
        after = int(raw_after)
    except ValueError:
        raise invalid(
            f"Invalid 'starting_after': expected an integer, got {raw_after!r}.", "starting_after"
        ) from None
    strip = request.GET.get("include_obfuscation", "true").lower() == "false"
    return _event_stream(_deliver(request, entry.follow(after), strip_obfuscation=strip))


@login_not_required
@csrf_exempt
@openai_api("POST")
async def cancel_response(request: HttpRequest, response_id: str) -> HttpResponse:
    return JsonResponse(_stored(response_id).cancel(), json_dumps_params={"ensure_ascii": False})


@login_not_required
@csrf_exempt
@openai_api("POST")
async def chat_completions(request: HttpRequest) -> HttpResponse:
    body = _body(request)
    seeded = (
        isinstance(body, dict)
        and isinstance(body.get("metadata"), dict)
        and "sim_seed" in body["metadata"]
    )
    plan = plan_chat(body, **_fresh(seeded))
    stall_after = plan.request.knobs.stall_after
    await asyncio.sleep((plan.stall_ms if stall_after is None else 0.0) / 1000)
    if plan.request.stream:
        chunks = (
            [frame for _event, frame in batch]
            async for batch in play(plan.steps, plan.pacing, encode_data_only)
        )
        faults = {
            "drop_after": plan.drop_after,
            "stall_after": stall_after,
            "stall_ms": plan.stall_ms,
        }
        trailer = DONE_MARKER if plan.done_marker else b""
        response = _event_stream(_deliver(request, chunks, trailer=trailer, **faults))
        if plan.drop_after is None and stall_after is None:
            response.simulator_playback = Playback(  # type: ignore[attr-defined]
                plan.steps, plan.pacing, encode_data_only, trailer=trailer
            )
        return response
    steps = list(plan.steps)
    await asyncio.sleep(min(plan.pacing.total_seconds(steps), MAX_BLOCKING_WAIT_S))
    chunks_data = [step.event for step in steps]
    if "error" in chunks_data[-1]:
        error = chunks_data[-1]["error"]
        status = 429 if error["code"] == "insufficient_quota" else 500
        raise SimulatorError(
            APIErrorSpec(status, error["message"], error["type"], error["code"], error["param"])
        )
    if plan.drop_after is not None:
        await _drop(request)
    return JsonResponse(
        completion_from_chunks(chunks_data), json_dumps_params={"ensure_ascii": False}
    )


@login_not_required
@csrf_exempt
@openai_api("POST")
async def moderations(request: HttpRequest) -> HttpResponse:
    return JsonResponse(moderate(_body(request), secrets.token_hex(12)))


@login_not_required
@csrf_exempt
@openai_api("GET", "POST", "PUT", "PATCH", "DELETE")
async def unknown_endpoint(request: HttpRequest, path: str) -> HttpResponse:
    raise SimulatorError(APIErrorSpec(404, f"Invalid URL ({request.method} /v1/{path})"))
