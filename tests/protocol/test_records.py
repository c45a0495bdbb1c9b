"""The event record's JSON (streams/protocol/records.py): encoded once, spliced into every frame."""

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.protocol import records
from streams.protocol.records import encode_record


def test_a_record_is_the_json_of_its_fields_with_the_data_spliced_in_as_received():
    text = encode_record(7, 1234.56789, 'odd "type" \\ é', '{"b": 1,  "a":[2]}')
    assert json.loads(text) == {"seq": 7, "t": 1234.568, "type": 'odd "type" \\ é', "data": {"b": 1, "a": [2]}}
    assert text.endswith(',"data":{"b": 1,  "a":[2]}}')  # the upstream's exact text, not re-encoded


def test_however_many_types_an_upstream_names_each_is_quoted_right_and_few_are_remembered():
    types = [f"kind.{i}\u2028" for i in range(3000)]
    assert [json.loads(encode_record(i, 0.0, kind, "{}"))["type"] for i, kind in enumerate(types)] == types
    assert len(records._QUOTED) <= 1024


def test_rows_are_encoded_as_their_records():
    rows = [(3, 0, 0.0, "a", "{}"), (3, 1, 1234.56789, 'odd "type"', '{"b": 1,  "a":[2]}'), (3, 2, 1e300, "a", "[]")]
    assert records.encode_rows(rows) == [encode_record(seq, t, kind, data) for _, seq, t, kind, data in rows]
    assert records.encode_rows([]) == []


EDGES = [0.0, -0.0, -0.0001, 0.0004999, 0.0005, 0.0015, 1.0625, 2.5e-4, 1e-300, 5e-324, 0.1, 1.0, 10.0, 100.5,
         999999999999.9994, 999999999999.9995, 1e12, -1e12, 1e12 - 0.001, 123456789012.3456, 1e15, 1e16, 1e300,
         float("inf"), float("-inf"), float("nan")]


@given(st.one_of(st.floats(), st.floats(min_value=-1e13, max_value=1e13), st.floats(min_value=0, max_value=1e7),
                 st.integers(min_value=-10**15, max_value=10**15).map(lambda n: n / 1000),
                 st.integers(min_value=0, max_value=10**9).map(lambda n: n / 16),
                 st.sampled_from(EDGES)))
@settings(max_examples=3000)
def test_a_records_time_is_its_value_rounded_to_a_microsecond_written_as_python_writes_it(t):
    assert records.time_text(t) == repr(round(t, 3))
