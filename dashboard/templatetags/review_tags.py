"""Template helpers for review: ``{% if user|is_reviewer %}`` shows the queue link."""

from typing import Any

from django import template

from streams.models import is_reviewer as _is_reviewer

register = template.Library()


@register.filter
def is_reviewer(user: Any) -> bool:
    return _is_reviewer(user)
