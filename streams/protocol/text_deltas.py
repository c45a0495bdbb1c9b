"""The Responses API's commonest event, ``response.output_text.delta``, read a network read at a time.

A fast stream is tens of thousands of these, a few hundred per read, and all a run keeps from each
is its data, its sequence number and its text (streams/live/recorder.py). Taken one frame at a
time (a frame, a decode, the checks, a row, the metrics) they were most of the read half's CPU
(docs/performance.md). :meth:`SSEDecoder.feed_matching` with :data:`PREFIX` gives a read's events
as their data values; :func:`read` decodes each and checks them all at once, answering None for
anything the one-by-one way must decide (a value the decoder refuses, another type, a ``usage``, a
sequence number missing, not an int, or not rising).

Each value is decoded by msgspec into the three fields a run keeps, not by orjson into a whole
dict (0.58 -> 0.32 us per event with the checks, docs/performance.md). msgspec still checks the
whole text is JSON; it refuses what the one-by-one way may read differently (``NaN``,
``Infinity``, a lone surrogate, a number past 64 bits, a bool or float ``sequence_number``), and
such a read goes frame by frame (streams/protocol/fastjson.py): never a different answer, only
the slower way.
"""

from __future__ import annotations

from operator import attrgetter, lt
from typing import Annotated, Literal, NamedTuple

import msgspec

TYPE = "response.output_text.delta"
PREFIX = b"event: response.output_text.delta\ndata: "  # how every server we know writes one

_STR = {str}


class _Delta(msgspec.Struct):
    """What a run reads of a delta; every other field is checked as JSON and skipped."""

    type: Literal["response.output_text.delta"]
    # Within int64: orjson, the one-by-one way, gives an int there (and a float past 2**64).
    sequence_number: Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
    delta: object = None  # any JSON value: the text takes it when it is a string
    usage: object = msgspec.UNSET  # present at all (null too): the one-by-one way decides


_decode = msgspec.json.Decoder(_Delta).decode
_sequence_number = attrgetter("sequence_number")
_delta = attrgetter("delta")
_usage = attrgetter("usage")


class TextDeltas(NamedTuple):
    data: list[str]  # each event's data, as stored
    last_seq: int  # the last event's sequence number
    text: str  # their deltas, joined


def read(values: list[bytes], last_seq: int | None) -> TextDeltas | None:
    """The events whose data are ``values``, when each is a JSON object of :data:`TYPE` without
    ``usage``, with an int ``sequence_number`` above ``last_seq`` and the one before it; else None."""
    try:
        events = list(map(_decode, values))
    except (msgspec.DecodeError, RecursionError):  # not JSON, not an object, another type, no int sequence
        return None  # number; nested past msgspec's depth: frame by frame, as one malformed event
    if not events or list(map(_usage, events)).count(msgspec.UNSET) != len(events):
        return None
    seqs = list(map(_sequence_number, events))
    if (last_seq is not None and seqs[0] <= last_seq) or not all(map(lt, seqs, seqs[1:])):
        return None
    try:
        data = list(map(bytes.decode, values))
    except UnicodeDecodeError:
        return None
    deltas = list(map(_delta, events))
    if set(map(type, deltas)) == _STR:
        text = "".join(deltas)
    else:
        text = "".join(delta for delta in deltas if isinstance(delta, str))
    return TextDeltas(data, seqs[-1], text)
