"""Values from outside (URLs, form fields, JSON bodies, imported files), parsed in one place that
refuses what the rest of Streamscope cannot represent.

- Ids and counts: ASCII digits only (``str.isdigit`` also accepts "²" and "٣", which ``int``
  refuses or misreads), at most 18 digits, within a signed 64-bit column.
- JSON: no ``NaN``/``Infinity`` (nor numbers that overflow to infinity, such as ``1e999``), no
  nesting deeper than :data:`MAX_JSON_DEPTH` (deep nesting is a RecursionError waiting to happen
  in every later ``json.dumps``), and no lone UTF-16 surrogates (``"\\ud800"`` decodes to a Python
  string that UTF-8 cannot encode, so every page, export and database write of it would fail):
  each is replaced by U+FFFD, as imports always did.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_JSON_DEPTH = 64
MAX_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,18}")
_SURROGATE = re.compile(r"[\ud800-\udfff]")


class BadValue(ValueError):
    """A value from outside that cannot be used; the message names it and says what is accepted."""


def parse_int(text: Any, name: str, *, minimum: int = 0, maximum: int = MAX_ID) -> int:
    """A non-negative (or ``minimum``..``maximum``) integer written in ASCII digits, or BadValue."""
    value = text.strip() if isinstance(text, str) else text
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and _DIGITS.fullmatch(value))):
        raise BadValue(f"{name} must be a whole number from {minimum} to {maximum}; got {_show(text)}")
    number = int(value)
    if not minimum <= number <= maximum:
        raise BadValue(f"{name} must be a whole number from {minimum} to {maximum}; got {_show(text)}")
    return number


def parse_id(text: Any, name: str = "id") -> int:
    """A database id: a positive integer that fits a 64-bit column."""
    return parse_int(text, name, minimum=1)


def parse_signed_int(text: Any, name: str, *, minimum: int, maximum: int) -> int:
    """Like :func:`parse_int`, allowing one leading minus sign (``after=-1``)."""
    value = text.strip() if isinstance(text, str) else text
    if isinstance(value, str) and value.startswith("-"):
        return -parse_int(value[1:], name, minimum=-maximum if maximum < 0 else 0, maximum=-minimum)
    return parse_int(value, name, minimum=minimum, maximum=maximum)


def clean_text(value: str) -> str:
    """``value`` as every database keeps it: each lone surrogate (UTF-8 cannot encode it) and each
    NUL (PostgreSQL keeps none in text or JSON) replaced by U+FFFD; unchanged, and fast, otherwise."""
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    if value.isascii():
        return value
    try:
        value.encode("utf-8")
        return value
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", value)


def _reject_constant(name: str) -> Any:
    raise BadValue(f"{name} is not a JSON number Streamscope accepts; send a finite number")


def _finite_float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise BadValue(f"the number {text[:40]} is too large; send a finite number")
    return number


def loads(text: str | bytes, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` with the limits above; BadValue (a ValueError) says what was wrong."""
    try:
        value = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except RecursionError:
        raise BadValue(f"the JSON is nested too deeply (the limit is {max_depth} levels)") from None
    except BadValue:
        raise
    except ValueError as exc:
        raise BadValue(f"not valid JSON: {exc}") from None
    return clean_json(value, max_depth)


def clean_json(value: Any, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """A decoded JSON value checked for depth and with lone surrogates replaced (iteratively)."""
    if isinstance(value, str):
        return clean_text(value)
    if not isinstance(value, (dict, list)):
        return value
    root: list[Any] = [value]
    stack: list[tuple[Any, int]] = [(root, 0)]
    while stack:
        container, depth = stack.pop()
        if depth > max_depth:
            raise BadValue(f"the JSON is nested too deeply (the limit is {max_depth} levels)")
        if isinstance(container, dict):
            for key in list(container):
                item = container[key]
                clean_key = clean_text(key)
                if clean_key != key:
                    del container[key]
                container[clean_key] = _clean_leaf(item, stack, depth)
        else:
            for index, item in enumerate(container):
                container[index] = _clean_leaf(item, stack, depth)
    return root[0]


def _clean_leaf(item: Any, stack: list[tuple[Any, int]], depth: int) -> Any:
    if isinstance(item, str):
        return clean_text(item)
    if isinstance(item, (dict, list)):
        stack.append((item, depth + 1))
    return item


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


RESPONSE_ID_MAX = 200  # Run.response_id's max_length


def usable_response_id(value: Any) -> str:
    """The upstream's response id when the run's row can keep it as it is and the URLs built from it
    (resume, cancel) can carry it; else "" (the run then cannot resume, its events are kept)."""
    if isinstance(value, str) and 0 < len(value) <= RESPONSE_ID_MAX and clean_text(value) == value:
        return value
    return ""
