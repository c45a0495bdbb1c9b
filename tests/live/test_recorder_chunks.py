"""RunRecorder.accept_chunk: a network read's events recorded exactly as accept_frame records them one
by one (rows, sequence numbers, text, metrics, errors), whether its text deltas go together or not."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.live.recorder import RunRecorder
from streams.protocol.sse import SSEDecoder

RECORDINGS = sorted((Path(__file__).resolve().parent.parent / "recordings").glob("*.sse"))
ITEM = "msg_10af81bd8be6ad733145caaf7bb9adc7bdf5423d501b5424ab"


def recorded(chunks, together, max_events=None):
    """What a recorder kept of ``chunks``, read by accept_chunk (``together``) or frame by frame."""
    recorder = RunRecorder(1)
    if max_events is not None:
        recorder.max_events = max_events
    decoder = SSEDecoder()
    error = None
    try:
        for index, chunk in enumerate(chunks):
            t = 10.0 + index
            if together:
                recorder.accept_chunk(decoder, chunk, t)
            else:
                for frame in decoder.feed(chunk):
                    recorder.accept_frame(frame, t)
            recorder.record_ignored_lines(decoder.take_ignored(), t)
        frames, leftover = decoder.close()
        for frame in frames:
            recorder.accept_frame(frame, 99.0)
    except Exception as exc:  # the same error, after the same events
        error = repr(exc)
    return {
        "rows": recorder.buffer, "text": "".join(recorder.text_parts), "next_seq": recorder.next_seq,
        "last_upstream_seq": recorder.last_upstream_seq, "metrics": recorder.metrics.snapshot(),
        "gaps": list(recorder.metrics.delta_gaps), "response_id": recorder.response_id,
        "terminal": recorder.terminal_type, "error": error,
    }


def cut(stream, size):
    return [stream[i:i + size] for i in range(0, len(stream), size)]


def simulator_delta(seq, delta):
    """The simulator's key order (and the one OpenAI sent in 2025, below)."""
    return (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":%d,'
            b'"item_id":"%s","output_index":0,"content_index":0,"logprobs":[],"delta":%s,"obfuscation":"EbBfK3gM"}\n\n'
            % (seq, ITEM.encode(), json.dumps(delta).encode()))


def openai_delta(seq, delta):
    return (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","delta":%s,'
            b'"logprobs":[],"item_id":"%s","content_index":0,"output_index":0,"sequence_number":%d}\n\n'
            % (json.dumps(delta, ensure_ascii=False).encode(), ITEM.encode(), seq))


def raw_delta(data):
    return b"event: response.output_text.delta\ndata: " + data + b"\n\n"


HEAD = (b'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
        b'"response":{"id":"resp_1","status":"in_progress"}}\n\n')
TAIL = (b'event: response.completed\ndata: {"type":"response.completed","sequence_number":%d,'
        b'"response":{"id":"resp_1","status":"completed","usage":{"output_tokens":7}}}\n\n')

DATA_ID = b'data: {"type":"response.output_text.delta","sequence_number":%d,"delta":"id"}\n\n'
# Delta events a fast path could get wrong; each must be recorded as accept_frame records it.
ODD = [
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"x","usage":{"a":1}}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":true,"delta":"bool seq"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":1.5,"delta":"float seq"}'),
    raw_delta(b'{"type":"response.output_text.delta","delta":"no seq"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":2,"delta":"seen already"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":5}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"a","delta":"b"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"type":"other","delta":"t"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"\\ud800 lone"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"\\ud83d\\ude00 \\" \\n"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"bad \xff utf-8"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"nan","x":NaN}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"cut'),
    raw_delta(b'["response.output_text.delta"]'),
    raw_delta(b''),
    raw_delta(b'[DONE]'),
    raw_delta(b' {"type":"response.output_text.delta","sequence_number":%d,"delta":"two spaces"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,'
              b'"delta":"caf\xc3\xa9 \xe2\x80\x9cq\xe2\x80\x9d"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"logprobs":[{"token":"a","logprob":-0.1}],'
              b'"delta":"lp"}'),
    # What text_deltas' decoder (msgspec) reads or refuses otherwise than orjson and json.loads.
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"inf","x":-Infinity}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"big","x":1e400}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":9223372036854775808,"delta":"past int64"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":18446744073709551616,"delta":"past 64 bits"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"u","usage":null}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":1,"sequence_number":%d,"delta":"twice"}'),
    raw_delta(b'{"typ\\u0065":"response.output_text.delta","sequence_number":%d,"delta":"escaped key"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"tab\\tin","x":"raw\ttab"}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":"lead","x":01}'),
    raw_delta(b'{"type":"response.output_text.delta","sequence_number":%d,"delta":null}'),
    b'event: response.output_text.delta\nid: 7\n' + DATA_ID,
    b'event: response.output_text.delta\ndata:{"type":"response.output_text.delta","sequence_number":%d,'
    b'"delta":"nsp"}\n\n',
    b'data: {"type":"response.output_text.delta","sequence_number":%d,"delta":"no name"}\n\n',
    b': keep-alive\n\n',
    b'\n',
    b'not a field\n',
    b'event: response.output_text.delta\r\ndata: {"type":"response.output_text.delta","sequence_number":%d,'
    b'"delta":"cr"}\r\n\r\n',
]


def fast_stream(count=400, start=1, order=simulator_delta):
    words = ["Hello", " world", ",", " caf\u00e9", " \"quoted\"", "\n", " \U0001f600", "", " x" * 40]
    body = b"".join(order(start + i, words[i % len(words)]) for i in range(count))
    return HEAD + body + TAIL % (start + count)


@pytest.mark.parametrize("order", [simulator_delta, openai_delta])
@pytest.mark.parametrize("size", [1, 300, 1024, 1500, 4096, 16384, 65536, 10**7])
def test_a_fast_stream_is_recorded_as_frame_by_frame(order, size):
    chunks = cut(fast_stream(order=order), size)
    together = recorded(chunks, together=True)
    assert together == recorded(chunks, together=False)
    assert together["error"] is None and together["next_seq"] == 402 and together["last_upstream_seq"] == 401


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda path: path.stem)
@pytest.mark.parametrize("size", [7, 1024, 1500, 4096, 65536, 10**7])
def test_recordings_are_recorded_as_frame_by_frame(path, size):
    chunks = cut(path.read_bytes(), size)
    assert recorded(chunks, together=True) == recorded(chunks, together=False)


def test_deltas_already_stored_before_a_resume_are_skipped_as_frame_by_frame():
    # A resumed stream repeats events up to its cursor; and one whose numbers go down.
    stream = fast_stream(100) + fast_stream(100, start=50)
    for size in (2048, 8192, 10**7):
        for start_seq in (None, 30, 120):
            chunks = cut(stream, size)
            results = []
            for together in (True, False):
                recorder = RunRecorder(1)
                recorder.last_upstream_seq = start_seq
                decoder = SSEDecoder()
                for chunk in chunks:
                    if together:
                        recorder.accept_chunk(decoder, chunk, 1.0)
                    else:
                        for frame in decoder.feed(chunk):
                            recorder.accept_frame(frame, 1.0)
                results.append((recorder.buffer, "".join(recorder.text_parts), recorder.last_upstream_seq,
                                recorder.metrics.snapshot()))
            assert results[0] == results[1]


@pytest.mark.parametrize("limit", [1, 150, 299, 300, 301, 402])
def test_the_event_limit_stops_at_the_same_event(limit):
    chunks = cut(fast_stream(300), 8192)
    together = recorded(chunks, together=True, max_events=limit)
    assert together == recorded(chunks, together=False, max_events=limit)
    assert len(together["rows"]) == min(limit, 302)


@pytest.mark.parametrize("odd", range(len(ODD)))
@pytest.mark.parametrize("order", [simulator_delta, openai_delta])
def test_each_odd_delta_among_plain_ones_is_recorded_as_frame_by_frame(odd, order):
    template = ODD[odd]
    middle = (b"".join(order(seq, " w") for seq in range(1, 21)) + (template % 21 if b"%d" in template else template)
              + b"".join(order(seq, " v") for seq in range(22, 42)))
    stream = HEAD + middle + TAIL % 42
    for chunks in ([HEAD, middle, TAIL % 42], [HEAD + middle[:100], middle[100:] + TAIL % 42], cut(stream, 3000)):
        assert recorded(chunks, together=True) == recorded(chunks, together=False)


@pytest.mark.parametrize("seq", [2**63 - 1, 2**63, 2**64 - 1, 2**64, 10**30])
@pytest.mark.parametrize("order", [simulator_delta, openai_delta])
def test_a_huge_sequence_number_ending_a_read_is_recorded_as_frame_by_frame(seq, order):
    # Past 64 bits orjson (the one-by-one way) gives a float, no cursor: the deltas after it count.
    before = b"".join(order(n, " w") for n in range(1, 21)) + order(seq, " huge")
    after = b"".join(order(n, " v") for n in range(21, 41))
    chunks = [HEAD, before, after + TAIL % 41]
    assert recorded(chunks, together=True) == recorded(chunks, together=False)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(ODD)), st.integers(1, 30)), min_size=1, max_size=25),
       st.lists(st.integers(1, 20000), max_size=12), st.sampled_from([simulator_delta, openai_delta]))
def test_any_mix_of_plain_and_odd_deltas_in_any_chunks(pieces, cuts, order):
    seq = 1
    parts = [HEAD]
    for which, run in pieces:
        for _ in range(run if which == len(ODD) else 1):
            word = "w\u00e9 \"q\"" if seq % 7 == 0 else f" w{seq}"
            template = order(seq, word) if which == len(ODD) else ODD[which]
            parts.append(template % seq if b"%d" in template else template)
            seq += 1
    stream = b"".join(parts) + TAIL % seq
    points = sorted({c for c in cuts if c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    assert recorded(chunks, together=True) == recorded(chunks, together=False)


def test_a_read_of_plain_deltas_makes_no_frame(monkeypatch):
    """The point of accept_chunk: a fast stream's read of text deltas is taken whole, not frame by frame."""
    recorder = RunRecorder(1)
    decoder = SSEDecoder()
    recorder.accept_chunk(decoder, HEAD, 1.0)  # the stream's first read: one event, frame by frame

    def refuse(frame, t):
        raise AssertionError("a frame was made")

    monkeypatch.setattr(recorder, "accept_frame", refuse)
    chunk = b"".join(simulator_delta(seq, " w") for seq in range(1, 201))
    recorder.accept_chunk(decoder, chunk, 2.0)
    assert recorder.next_seq == 201 and recorder.last_upstream_seq == 200
    assert "".join(recorder.text_parts) == " w" * 200
    assert recorder.metrics.counts["response.output_text.delta"] == 200
    assert recorder.metrics.bytes_received == len(HEAD) + len(chunk)


def test_a_delta_nested_past_the_decoder_s_depth_is_one_malformed_event_as_frame_by_frame():
    """msgspec raises RecursionError, not DecodeError, past its depth (review of b94a4b1): the read
    raised out of accept_chunk and failed the run, where frame by frame it is one malformed event."""
    deep = (b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":40,'
            b'"delta":' + b"[" * 3000 + b"]" * 3000 + b"}\n\n")
    first = simulator_delta(0, "w0 ")  # a stream's first read is never taken whole
    chunk = (b"".join(simulator_delta(seq, f"w{seq} ") for seq in range(1, 40)) + deep
             + b"".join(simulator_delta(seq, f"w{seq} ") for seq in range(41, 60)))
    one_by_one = recorded([first, chunk], together=False)
    assert one_by_one["error"] is None and one_by_one["next_seq"] == 60
    assert recorded([first, chunk], together=True) == one_by_one
