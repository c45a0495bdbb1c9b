"""Optional moderation model: a finished run's output is sent to an OpenAI-compatible
``/moderations`` endpoint and the categories it reports are stored on the run.

Configured by environment (read at call time, so tests and operators can switch it):
``STREAMSCOPE_MODERATION_URL`` (a base URL like ``http://host/v1`` or the full ``…/moderations``
URL; unset = off), ``STREAMSCOPE_MODERATION_MODEL`` (default ``omni-moderation-latest``) and
``STREAMSCOPE_MODERATION_KEY_ENV``: the *name* of the variable holding the API key (default
``STREAMSCOPE_MODERATION_API_KEY``), so the key itself is never in settings or logs.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass
from typing import Any

import httpx
from channels.db import database_sync_to_async
from django.conf import settings
from django.db import transaction

from streams.models import ModerationResult, ModerationRule, Run, RunFlag
from streams.pipeline.broadcast import publish_flag
from streams.review.verdicts import refresh_review_state

log = logging.getLogger(__name__)

DEFAULT_MODEL = "omni-moderation-latest"
MAX_INPUT_CHARS = 100_000
TIMEOUT_S = 30.0
_tasks: set[asyncio.Task] = set()  # strong references: a task nobody holds may be collected


@dataclass(frozen=True)
class ModerationConfig:
    url: str
    model: str
    api_key: str

    @property
    def endpoint(self) -> str:
        url = self.url.rstrip("/")
        return url if url.endswith("/moderations") else url + "/moderations"


def _setting(name: str, default: str = "") -> str:
    return str(getattr(settings, name, None) or os.environ.get(name, default))


def config() -> ModerationConfig | None:
    url = _setting("STREAMSCOPE_MODERATION_URL")
    if not url:
        return None
    key_env = _setting("STREAMSCOPE_MODERATION_KEY_ENV", "STREAMSCOPE_MODERATION_API_KEY")
    return ModerationConfig(url=url, model=_setting("STREAMSCOPE_MODERATION_MODEL", DEFAULT_MODEL),
                            api_key=os.environ.get(key_env, ""))


def configured() -> bool:
    return config() is not None


def schedule(run_id: int) -> None:
    """Check a finished run in the background (the run's final status is not held up)."""
    task = asyncio.get_running_loop().create_task(moderate_run(run_id), name=f"moderate-run-{run_id}")
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def moderate_run(run_id: int, client: httpx.AsyncClient | None = None) -> Any:
    """Send the run's output text to the endpoint; store and return the ModerationResult."""
    cfg = config()
    if cfg is None:
        return None
    run = await Run.objects.aget(pk=run_id)
    text = run.output_text or ""
    if not text.strip():
        return None
    headers = {"Authorization": f"Bearer {cfg.api_key}"} if cfg.api_key else {}
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    own_client = client is None
    client = client or httpx.AsyncClient(timeout=TIMEOUT_S)
    try:
        response = await client.post(cfg.endpoint, json={"model": cfg.model, "input": text[:MAX_INPUT_CHARS]},
                                      headers=headers)
        body = response.json()
        if response.status_code >= 400:
            detail = body.get("error") if isinstance(body, dict) else None
            message = detail.get("message") if isinstance(detail, dict) else response.text[:500]
            error = {"message": f"HTTP {response.status_code}: {message}"}
        else:
            result = body["results"][0]
            if not isinstance(result, dict) or not isinstance(result.get("categories"), dict):
                raise ValueError("the answer has no results[0].categories")
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as exc:
        error = {"message": f"the moderation endpoint could not be used: {exc}"}
    finally:
        if own_client:
            await client.aclose()
    if error:
        log.warning("run %s: moderation model check failed: %s", run_id, error["message"])
    stored, flag = await database_sync_to_async(store_result)(run_id, cfg.model, result, error)
    if flag is not None:
        await publish_flag(run_id, flag)
    return stored


def store_result(run_id: int, model: str, result: dict[str, Any] | None,
                 error: dict[str, Any] | None) -> tuple[Any, dict[str, Any] | None]:
    """Store the result; a flagged output also gets a RunFlag (once) so it enters the queue."""
    result = result or {}
    categories = {k: bool(v) for k, v in (result.get("categories") or {}).items()}
    with transaction.atomic():
        stored, _ = ModerationResult.objects.update_or_create(
            run_id=run_id,
            defaults={
                "model": model[:200],
                "flagged": bool(result.get("flagged")),
                "categories": categories,
                "category_scores": result.get("category_scores") or {},
                "error": error,
            },
        )
        flag = None
        if stored.flagged and not RunFlag.objects.filter(run_id=run_id, source=RunFlag.Source.MODEL).exists():
            names = ", ".join(stored.flagged_categories) or "flagged"
            created = RunFlag.objects.create(
                run_id=run_id, rule=None, source=RunFlag.Source.MODEL, rule_name=f"moderation model: {names}"[:200],
                action=ModerationRule.Action.FLAG, scope=ModerationRule.Scope.OUTPUT_TEXT,
            )
            flag = created.to_json()
            refresh_review_state(run_id)
    return stored, flag
