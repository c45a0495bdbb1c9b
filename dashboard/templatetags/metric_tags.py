"""``{% metric_help "ttft_ms" %}``: the one-sentence definition of a figure (docs/metrics.md), for hover help."""

from __future__ import annotations

from django import template

from streams.protocol.metrics import DEFINITIONS

register = template.Library()


@register.simple_tag
def metric_help(key: str) -> str:
    return DEFINITIONS.get(key, "")
