"""The JSON shapes of runs, groups and flags, for the API, the pages' embedded JSON and the socket."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from streams.models import Run, RunFlag, RunGroup


def run_json(run: Run) -> dict[str, Any]:
    return {
        "id": run.pk,
        "status": run.status,
        "provider": run.provider,
        "model": run.model,
        "owner": run.owner.get_username(),
        "request": run.request,
        "input": run.input_text,
        "output_text": run.output_text,
        "usage": run.usage,
        "metrics": run.metrics,
        "error": run.error,
        "event_count": run.event_count,
        "imported": run.imported,
        "source": run.source,
        "background": run.background,
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "url": reverse("run_detail", args=[run.pk]),
        "ws": f"/ws/runs/{run.pk}/",
    }


def group_json(group: RunGroup) -> dict[str, Any]:
    members = list(group.members.select_related("run").order_by("position"))
    ids = [member.run_id for member in members]
    return {
        "id": group.pk,
        "input": group.input,
        "created_at": group.created_at.isoformat() if group.created_at else None,
        "runs": [
            {"id": m.run_id, "label": m.label, "status": m.run.status, "model": m.run.model,
             "provider": m.run.provider, "url": f"/runs/{m.run_id}/", "ws": f"/ws/runs/{m.run_id}/"}
            for m in members
        ],
        "compare_url": f"/compare/?runs={','.join(map(str, ids))}&group={group.pk}",
    }


def flags_json(run_id: int) -> list[dict[str, Any]]:
    return [flag.to_json() for flag in RunFlag.objects.filter(run_id=run_id).order_by("created_at", "id")]
