"""Replay as an upstream, and the tokens that open it. See docs/replay.md.

- ``POST /replay/<id>/v1/responses``: an OpenAI-compatible Responses endpoint that streams the
  stored run back (``stream: true``) at its original pace, or ``?speed=`` / ``metadata.replay_speed``
  (0.25..10 or max); without ``stream`` it answers the final response object. Called by SDKs
  with ``Authorization: Bearer <replay token>``; a logged-in browser may use its session instead
  (then the CSRF header is required, as on every other write). Errors are OpenAI-shaped JSON.
- ``/api/runs/<id>/replay-token/``: ``GET`` whether a token exists, ``POST`` make a new one
  (shown once; replaces the old), ``DELETE`` revoke. Only the run's owner manages its token.
"""

from __future__ import annotations

import secrets
from typing import Any

from channels.db import database_sync_to_async
from django.contrib.auth.decorators import login_not_required
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt

from dashboard.api.common import api_view, error, openai_error
from streams.history.replay_clock import BadReplayParameter, parse_speed
from streams.history.replay_upstream import (
    final_response,
    issue_token,
    replay_frames,
    revoke_token,
    run_for_token,
    run_is_untimed,
    token_info,
    whole_answer,
)
from streams.history.retention import pruned_note
from streams.models import Run
from streams.protocol import values


def _controllable_run(user: Any, run_id: int) -> Run | None:
    # Replaying a run through a session is acting on it: its owner and staff (docs/replay.md).
    return Run.objects.controllable_by(user).select_related("owner").filter(pk=run_id).first()


def _csrf_refusal(request: HttpRequest) -> HttpResponse | None:
    # The view is csrf_exempt for bearer-token clients; a session caller gets the usual check.
    return CsrfViewMiddleware(lambda _request: HttpResponse()).process_view(request, None, (), {})


async def _authorised_run(request: HttpRequest, run_id: int) -> Run | JsonResponse:
    header = request.headers.get("Authorization", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return openai_error("use Authorization: Bearer <replay token>", 401, "invalid_api_key")
        run = await database_sync_to_async(run_for_token)(run_id, token.strip())
        if run is None:
            return openai_error("this replay token does not open this run (wrong run, revoked or mistyped); "
                                "make a new one on the run's replay page", 401, "invalid_api_key")
        return run
    user = await request.auser()
    if not user.is_authenticated:
        return openai_error("send Authorization: Bearer <replay token> (made on the run's replay page)", 401,
                            "missing_api_key")
    if await database_sync_to_async(_csrf_refusal)(request) is not None:
        return openai_error("with a session cookie, send the X-CSRFToken header too", 403, "csrf_failed")
    run = await database_sync_to_async(_controllable_run)(user, run_id)
    if run is None:
        return openai_error("no such run (or it is not yours)", 404, "not_found")
    return run


@login_not_required
@csrf_exempt
async def responses(request: HttpRequest, run_id: int) -> HttpResponse:
    if request.method != "POST":
        return openai_error(f"Invalid method for URL ({request.method} {request.path})", 405)
    run = await _authorised_run(request, run_id)
    if isinstance(run, JsonResponse):
        return run
    try:
        body = values.loads(request.body or b"{}")
    except RequestDataTooBig:
        return openai_error("the body is too large", 413)
    except values.BadValue as exc:
        return openai_error(f"the body is not usable JSON: {exc}", 400)
    if not isinstance(body, dict):
        return openai_error("the body must be a JSON object", 400)
    metadata = body.get("metadata") if isinstance(body.get("metadata"), dict) else {}
    try:
        speed = parse_speed(request.GET.get("speed") or metadata.get("replay_speed"))
    except BadReplayParameter as exc:
        return openai_error(str(exc), 400, "invalid_value", param="speed")
    if run.is_active:
        return openai_error(f"run {run.pk} is still {run.status}; replay it once it has ended", 409, "run_active")
    if run.events_pruned_at is not None:
        return openai_error(pruned_note(run), 410, "events_pruned")
    whole = await database_sync_to_async(whole_answer)(run)
    if whole is not None and whole.get("object") != "response":
        return openai_error(f"run {run.pk} recorded a non-streamed answer that is not a Response (a chat "
                            f"completion, or a body that was not JSON): the Responses replay cannot serve it",
                            400, "not_a_response")
    if whole is not None and body.get("stream") is True:
        return openai_error(f"run {run.pk} was answered whole, not streamed: it has no events to replay; "
                            f"ask with stream: false for its Response", 400, "not_streamed", param="stream")
    if body.get("stream") is not True:
        final = await database_sync_to_async(final_response)(run, whole)
        if final is None:
            return openai_error(f"run {run.pk} has no final response to return; ask with stream: true", 404,
                                "no_final_response")
        return JsonResponse(final)
    untimed = await database_sync_to_async(run_is_untimed)(run)
    response = StreamingHttpResponse(replay_frames(run.pk, speed, untimed),
                                     content_type="text/event-stream; charset=utf-8")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"
    response["x-request-id"] = "req_replay_" + secrets.token_hex(8)
    return response


@api_view("GET", "POST", "DELETE")
async def replay_token(request: HttpRequest, run_id: int) -> HttpResponse:
    def handle() -> JsonResponse:
        run = Run.objects.visible_to(request.user).filter(pk=run_id).first()
        if run is None:
            return error("no such run (or it is not yours)", "not_found", 404)
        if run.owner_id != request.user.pk:
            return error("only the run's owner can manage its replay token", "forbidden", 403)
        if request.method == "POST":
            return JsonResponse({"token": issue_token(run), "base_url": f"/replay/{run.pk}/v1",
                                 **(token_info(run) or {})}, status=201)
        if request.method == "DELETE":
            return JsonResponse({"revoked": revoke_token(run)})
        info = token_info(run)
        return JsonResponse({"exists": info is not None, **(info or {})})

    return await database_sync_to_async(handle)()
