"""Fan-out groups in the JSON API (session cookie; X-CSRFToken on writes).

- ``POST /api/groups/`` ``{"input", "instructions", "variants": [{"provider", "model",
  "instructions"?, "params"?, "label"?}, ...]}`` → 201 the group with its runs, all streaming.
- ``GET /api/groups/`` the caller's groups; ``GET /api/groups/<id>/`` one group.
Every run named must be visible to the caller, else 404 (the same answer as "no such run").
"""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.http import HttpRequest, HttpResponse, JsonResponse

from dashboard.api.common import api_view, error, form_errors, json_object_body
from dashboard.forms import RunRequestForm
from dashboard.serializers import group_json
from streams.live.control import TooManyActiveRuns
from streams.live.fanout import MAX_VARIANTS, Variant, start_group
from streams.models import RunGroup

GROUPS_PAGE = 50


@api_view("GET", "POST")
async def groups(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        return await _create_group(request)
    return await database_sync_to_async(_list_groups)(request)


def _list_groups(request: HttpRequest) -> JsonResponse:
    found = RunGroup.objects.visible_to(request.user).order_by("-created_at", "-id")
    if request.GET.get("all") != "1":
        found = found.filter(owner=request.user)
    return JsonResponse({"groups": [group_json(group) for group in found[:GROUPS_PAGE]]})


@api_view("GET")
async def group_detail(request: HttpRequest, group_id: int) -> HttpResponse:
    def load() -> HttpResponse:
        group = RunGroup.objects.visible_to(request.user).filter(pk=group_id).first()
        if group is None:
            return error("no such group (or it is not yours)", "not_found", 404)
        return JsonResponse(group_json(group))

    return await database_sync_to_async(load)()


def _variants(body: dict[str, Any]) -> tuple[str, str, list[Variant]] | JsonResponse:
    """Validate the body with the playground's form, once per variant; an error response if bad."""
    raw = body.get("variants")
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_VARIANTS:
        return error(f"variants must be a list of 1 to {MAX_VARIANTS} objects", "invalid", 400)
    for key in ("input", "instructions"):
        if key in body and not isinstance(body[key], str):
            return error(f"{key} must be a string", "invalid", 400)
    if not body.get("input", "").strip():
        return error("the input is empty", "invalid", 400, fields={"input": ["the input is empty"]})
    variants = []
    input_text = ""
    for position, spec in enumerate(raw):
        if not isinstance(spec, dict):
            return error(f"variant {position + 1} must be a JSON object", "invalid", 400)
        label = spec.get("label", "")
        if not isinstance(label, str):
            return error(f"variant {position + 1}: label must be a string", "invalid", 400)
        data = {
            "provider": spec.get("provider", "simulator"),
            "model": spec.get("model", ""),
            "input": body.get("input", ""),
            "instructions": spec["instructions"] if "instructions" in spec else body.get("instructions", ""),
            "params": spec.get("params"),
        }
        if not all(isinstance(data[key], str) for key in ("provider", "model", "instructions")):
            return error(f"variant {position + 1}: provider, model and instructions must be strings", "invalid", 400)
        form = RunRequestForm(data)
        if not form.is_valid():
            return form_errors(form, f"variant {position + 1}", variant=position)
        cleaned = form.cleaned_data
        input_text = cleaned["input"]
        variants.append(Variant(cleaned["provider"], cleaned["model"], cleaned.get("instructions", ""),
                                cleaned["params"], label.strip()))
    return input_text, body.get("instructions", ""), variants


async def _create_group(request: HttpRequest) -> HttpResponse:
    body = json_object_body(request)
    if isinstance(body, JsonResponse):
        return body
    checked = await database_sync_to_async(_variants)(body)
    if isinstance(checked, JsonResponse):
        return checked
    input_text, instructions, variants = checked
    try:
        group, _runs = await start_group(request.user, input_text, variants, instructions)
    except TooManyActiveRuns as exc:
        return error(str(exc), "too_many_active_runs", 429)
    return JsonResponse(await database_sync_to_async(group_json)(group), status=201)
