"""The JSON shapes of runs, groups and flags, for the API, the pages' embedded JSON and the socket."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from streams.models import Run, RunFlag, RunGroup


def _iso(moment: Any) -> str | None:
    return moment.isoformat() if moment else None


def _common(run: Run) -> dict[str, Any]:
    """What every shape of a run says: who and what it is, where it stands, where it lives."""
    return {
        "id": run.pk,
        "status": run.status,
        "provider": run.provider,
        "model": run.model,
        "owner": run.owner.get_username(),
        "source": run.source,
        "event_count": run.event_count,
        "pinned": run.pinned,
        "events_pruned_at": _iso(run.events_pruned_at),
        "created_at": _iso(run.created_at),
        "finished_at": _iso(run.finished_at),
        "url": reverse("run_detail", args=[run.pk]),
    }


def run_json(run: Run) -> dict[str, Any]:
    return {
        **_common(run),
        "request": run.request,
        "input": run.input_text,
        "output_text": run.output_text,
        "usage": run.usage,
        "metrics": run.metrics,
        "error": run.error,
        "imported": run.imported,
        "background": run.background,
        "started_at": _iso(run.started_at),
        "ws": f"/ws/runs/{run.pk}/",
    }


SUMMARY_TEXT = 200  # characters of input and output a list item carries


def run_summary_json(run: Run) -> dict[str, Any]:
    """A run as a list shows it: its figures and the start of its input and output, not whole bodies."""
    error = run.error if isinstance(run.error, dict) else None
    return {
        **_common(run),
        "review_state": run.review_state,
        "input": _clip(run.input_text),
        "output": _clip(run.output_text),
        "error": {"code": error.get("code"), "message": _clip(str(error.get("message") or ""))} if error else None,
        "ttfb_ms": run.ttfb_ms,
        "ttfc_ms": run.ttfc_ms,
        "ttft_ms": run.ttft_ms,
        "ttfr_ms": run.ttfr_ms,
        "ttfa_ms": run.ttfa_ms,
        "duration_ms": run.duration_ms,
        "tokens_per_s": run.tokens_per_s,
        "gap_p95_ms": run.gap_p95_ms,
    }


def _clip(text: str) -> str:
    return text if len(text) <= SUMMARY_TEXT else text[: SUMMARY_TEXT - 1] + "…"


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
