"""Starting and stopping runs: the one entry point views and commands call."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from streams.live import stoppers
from streams.live.launcher import get_launcher
from streams.models import ACTIVE_STATUSES, Run, RunSource, RunStatus
from streams.upstream.providers import Provider, get_provider

CHAT_PARAMS = {"temperature", "top_p", "tools", "tool_choice", "parallel_tool_calls", "metadata", "store"}


class TooManyActiveRuns(Exception):
    pass


def build_request(provider: Provider, model: str, input_text: str, instructions: str,
                  params: dict[str, Any]) -> dict[str, Any]:
    """The JSON body sent upstream. It is stored on the run, so it must never hold a secret."""
    if provider.protocol == "chat":
        messages = []
        if instructions:
            messages.append({"role": "system", "content": instructions})
        messages.append({"role": "user", "content": input_text})
        body: dict[str, Any] = {"model": model, "messages": messages, "stream": True,
                                "stream_options": {"include_usage": True}}
        body.update({k: v for k, v in params.items() if k in CHAT_PARAMS})
        if "max_output_tokens" in params:
            body["max_completion_tokens"] = params["max_output_tokens"]
        return body
    body = {"model": model, "input": input_text, "stream": True}
    if instructions:
        body["instructions"] = instructions
    body.update(params)
    if provider.supports_background:
        body.setdefault("background", True)
    else:
        body.pop("background", None)
    return body


def create_run(owner: Any, provider_name: str, model: str, input_text: str, instructions: str = "",
               params: dict[str, Any] | None = None) -> Run:
    provider = get_provider(provider_name)
    active = Run.objects.filter(owner=owner, status__in=list(ACTIVE_STATUSES)).count()
    limit = settings.STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER
    if active >= limit:
        raise TooManyActiveRuns(
            f"you already have {active} runs streaming (the limit is {limit}); wait for one to end or stop one"
        )
    body = build_request(provider, model, input_text, instructions, params or {})
    return Run.objects.create(
        owner=owner,
        provider=provider.name,
        model=model,
        request=body,
        status=RunStatus.QUEUED,
        background=bool(body.get("background")),
    )


async def start_run(owner: Any, provider_name: str, model: str, input_text: str, instructions: str = "",
                    params: dict[str, Any] | None = None) -> Run:
    """Create the run and hand it to the launcher; returns before any byte is streamed."""
    run = await database_sync_to_async(create_run)(owner, provider_name, model, input_text, instructions, params)
    await get_launcher().launch(run.pk)
    return run


async def cancel_run(run: Run) -> None:
    if run.status in ACTIVE_STATUSES:
        if stoppers.stop_here(run.pk, "stopped in the dashboard"):
            return  # a gateway run streamed by this process: it ends its client's stream itself
        if run.source == RunSource.GATEWAY:
            await stoppers.request_stop(run.pk, "stopped in the dashboard")  # relayed by another process
            return
        await get_launcher().cancel(run.pk)
