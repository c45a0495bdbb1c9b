"""The Responses API's commonest event, ``response.output_text.delta``, read a network read at a time.

A fast stream is tens of thousands of these, a few hundred per read, and all a run keeps from each
is its data, its sequence number and its text (streams/live/recorder.py). Taken one frame at a
time (a frame, a decode, the checks, a row, the metrics) they were most of the read half's CPU
(docs/performance.md). :meth:`SSEDecoder.feed_matching` with :data:`PREFIX` gives a read's events
as their data values; :func:`read` decodes each (orjson, as ``fastjson.decode`` does) and checks
them all at once, answering None for anything the one-by-one way must decide (a value orjson
refuses, another type, a ``usage``, a sequence number missing, not an int, or not rising).
"""

from __future__ import annotations

from itertools import repeat
from operator import lt
from typing import NamedTuple

import orjson

TYPE = "response.output_text.delta"
PREFIX = b"event: response.output_text.delta\ndata: "  # how every server we know writes one

_INT = {int}
_STR = {str}


class TextDeltas(NamedTuple):
    data: list[str]  # each event's data, as stored
    last_seq: int  # the last event's sequence number
    text: str  # their deltas, joined


def read(values: list[bytes], last_seq: int | None) -> TextDeltas | None:
    """The events whose data are ``values``, when each is a JSON object of :data:`TYPE` without
    ``usage``, with an int ``sequence_number`` above ``last_seq`` and the one before it; else None."""
    try:
        payloads = list(map(orjson.loads, values))
        types = list(map(dict.get, payloads, repeat("type")))
    except (orjson.JSONDecodeError, TypeError):  # not JSON orjson takes, or not an object
        return None
    if types.count(TYPE) != len(types) or any(map(dict.__contains__, payloads, repeat("usage"))):
        return None
    seqs = list(map(dict.get, payloads, repeat("sequence_number")))
    if set(map(type, seqs)) != _INT or (last_seq is not None and seqs[0] <= last_seq) \
            or not all(map(lt, seqs, seqs[1:])):
        return None
    try:
        data = list(map(bytes.decode, values))
    except UnicodeDecodeError:
        return None
    deltas = list(map(dict.get, payloads, repeat("delta")))
    if set(map(type, deltas)) == _STR:
        text = "".join(deltas)
    else:
        text = "".join(delta for delta in deltas if isinstance(delta, str))
    return TextDeltas(data, seqs[-1], text)
