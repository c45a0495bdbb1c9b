"""The event record's JSON (streams/protocol/records.py): encoded once, spliced into every frame."""

import json

from streams.protocol import records
from streams.protocol.records import EventRecord, encode_record


def test_a_record_is_the_json_of_its_fields_with_the_data_spliced_in_as_received():
    text = encode_record(7, 1234.56789, 'odd "type" \\ é', '{"b": 1,  "a":[2]}')
    assert json.loads(text) == {"seq": 7, "t": 1234.568, "type": 'odd "type" \\ é', "data": {"b": 1, "a": [2]}}
    assert text.endswith(',"data":{"b": 1,  "a":[2]}}')  # the upstream's exact text, not re-encoded


def test_however_many_types_an_upstream_names_each_is_quoted_right_and_few_are_remembered():
    types = [f"kind.{i}\u2028" for i in range(3000)]
    assert [json.loads(EventRecord(i, 0.0, kind, "{}").encoded())["type"] for i, kind in enumerate(types)] == types
    assert len(records._QUOTED) <= 1024


def test_rows_are_encoded_as_their_records():
    rows = [(3, 0, 0.0, "a", "{}"), (3, 1, 1234.56789, 'odd "type"', '{"b": 1,  "a":[2]}'), (3, 2, 1e300, "a", "[]")]
    assert records.encode_rows(rows) == [encode_record(seq, t, kind, data) for _, seq, t, kind, data in rows]
    assert records.encode_rows([]) == []
