"""Fan-out: one prompt sent to up to four variants at once, saved as a :class:`RunGroup`.

Each variant is an ordinary run started with :func:`streams.live.control.start_run`, so it streams,
stores and broadcasts exactly like a playground run; the group only remembers which runs belong
together and in which order, for the compare view and the run list.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings

from streams.live.control import TooManyActiveRuns, start_run
from streams.models import ACTIVE_STATUSES, Run, RunGroup, RunGroupMember, RunSource

MAX_VARIANTS = 4


@dataclass(frozen=True)
class Variant:
    """What makes one run of a group different: where it goes and how it is asked."""

    provider: str
    model: str
    instructions: str = ""
    params: dict[str, Any] = field(default_factory=dict)
    label: str = ""

    def describe(self, shared_instructions: str = "") -> str:
        """A short label for the compare view when the person gave none (instructions only if own)."""
        if self.label:
            return self.label[:200]
        parts = [self.model if self.provider.startswith("simulator") else f"{self.provider}/{self.model}"]
        if "temperature" in self.params:
            parts.append(f"t={self.params['temperature']}")
        if self.instructions and self.instructions != shared_instructions:
            first = self.instructions.strip().splitlines()[0] if self.instructions.strip() else ""
            parts.append(f"“{first[:40]}{'…' if len(first) > 40 else ''}”")
        return " · ".join(parts)[:200]


def _check_capacity(owner: Any, wanted: int) -> None:
    active = Run.objects.filter(owner=owner, status__in=list(ACTIVE_STATUSES)).count()
    limit = settings.STREAMSCOPE_MAX_ACTIVE_RUNS_PER_USER
    if active + wanted > limit:
        raise TooManyActiveRuns(
            f"starting {wanted} runs would make {active + wanted} streaming at once (the limit is {limit}); "
            "wait for some to end or stop them"
        )


def _create_group(owner: Any, input_text: str) -> RunGroup:
    return RunGroup.objects.create(owner=owner, input=input_text)


def _add_member(group: RunGroup, run: Run, position: int, label: str) -> None:
    RunGroupMember.objects.create(group=group, run=run, position=position, label=label)
    Run.objects.filter(pk=run.pk).update(source=RunSource.FANOUT)
    run.source = RunSource.FANOUT


async def start_group(owner: Any, input_text: str, variants: list[Variant],
                      shared_instructions: str = "") -> tuple[RunGroup, list[Run]]:
    """Create the group and start every variant; returns before any byte is streamed."""
    if not 1 <= len(variants) <= MAX_VARIANTS:
        raise ValueError(f"a group has 1 to {MAX_VARIANTS} variants; got {len(variants)}")
    await database_sync_to_async(_check_capacity)(owner, len(variants))
    group = await database_sync_to_async(_create_group)(owner, input_text)
    runs = []
    for position, variant in enumerate(variants):
        run = await start_run(owner, variant.provider, variant.model, input_text, variant.instructions, variant.params)
        await database_sync_to_async(_add_member)(group, run, position, variant.describe(shared_instructions))
        runs.append(run)
    return group, runs
