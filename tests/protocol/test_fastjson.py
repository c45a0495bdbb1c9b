"""streams/protocol/fastjson.py gives what json.loads gives: the same value, or an error where it errs."""

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.protocol import fastjson


def outcome(decode, text):
    try:
        value = decode(text)
    except (ValueError, RecursionError) as exc:
        return ("error", type(exc) if isinstance(exc, RecursionError) else ValueError)
    # NaN != NaN: compare through a canonical text that spells it.
    return ("value", json.dumps(value, sort_keys=False), type(value))


TRICKY = [
    "NaN", "[Infinity, -Infinity]", "1e400", "-1e400", '{"a": 1e999}', '"\\ud800"', '{"\\udfff": "x"}',
    "\ufeff{}", '{"a": "x\x01y"}', '{"a": 1, "a": 2, "b": 3}', "[1.5e-400]", "18446744073709551615",
    "-9223372036854775808", "5e-324", "-0", "-0.0", " {} ", "{}\n", "[1,]", "{} {}", "", "tru", '"\x7f"',
    '["\\u00e9", "\\ud83d\\ude00", "é"]', "[" * 1200 + "]" * 1200, '{"type": "response.output_text.delta"}',
]


@pytest.mark.parametrize("text", TRICKY)
def test_tricky_texts_decode_as_the_standard_library_decodes_them(text):
    assert outcome(fastjson.decode, text) == outcome(json.loads, text)


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.text()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300)
@given(JSON_VALUES)
def test_any_value_json_writes_comes_back_as_json_reads_it(value):
    text = json.dumps(value)
    assert outcome(fastjson.decode, text) == outcome(json.loads, text)
    assert outcome(fastjson.decode, text.encode()) == outcome(json.loads, text.encode())


def test_integers_beyond_64_bits_are_exact_through_exact():
    # The one documented difference: orjson answers a float for them; exact() is json.loads.
    text = '{"usage": {"output_tokens": 123456789012345678901234}}'
    assert fastjson.exact(text)["usage"]["output_tokens"] == 123456789012345678901234
    assert math.isclose(fastjson.decode(text)["usage"]["output_tokens"], 1.2345678901234568e23)
