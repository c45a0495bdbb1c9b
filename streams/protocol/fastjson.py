"""Decoding the JSON of every upstream event: orjson (C) first, the standard library when it refuses.

A run decodes one payload per event, so at thousands of events a second the standard library's
decoder was the largest single cost of recording them (docs/performance.md). orjson is several
times cheaper but stricter: it refuses ``NaN``/``Infinity``, numbers that overflow a double, lone
UTF-16 surrogates and very deep nesting, all of which ``json.loads`` accepts (or refuses in its own
way). Whatever orjson refuses is decoded again by ``json.loads``, so such a payload gets the value,
or the error, it always got.

One difference remains: an integer outside the 64-bit range (beyond 18446744073709551615 or below
-9223372036854775808) comes back from orjson as a float, where ``json.loads`` gives the exact int.
No upstream sends such numbers in the fields a run reads, and the stored event keeps its exact
text either way; a caller that keeps a payload's numbers (usage) decodes that one with
:func:`exact`.
"""

from __future__ import annotations

import json
from typing import Any

import orjson

exact = json.loads


def decode(text: str | bytes) -> Any:
    """``json.loads(text)``, computed by orjson whenever orjson accepts the text."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
