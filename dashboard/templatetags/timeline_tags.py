"""Template helpers for the run list: which fan-out group each run belongs to, recent groups."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django import template

from streams.models import RunGroup, RunGroupMember

register = template.Library()


@register.simple_tag
def groups_of(runs: Iterable[Any]) -> dict[int, RunGroupMember]:
    """``{% groups_of page.object_list as groups %}``: run id → its group membership (one query)."""
    ids = [run.pk for run in runs]
    return {m.run_id: m for m in RunGroupMember.objects.filter(run_id__in=ids).select_related("group")}


@register.filter
def lookup(mapping: dict, key: Any) -> Any:
    return mapping.get(key) if isinstance(mapping, dict) else None


@register.simple_tag
def recent_groups(user: Any, limit: int = 8) -> list[RunGroup]:
    """The user's newest fan-out groups, each with its members prefetched."""
    if not getattr(user, "is_authenticated", False):
        return []
    return list(RunGroup.objects.filter(owner=user).prefetch_related("members")[:limit])
