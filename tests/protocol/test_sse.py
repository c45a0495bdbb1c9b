"""The SSE decoder on tricky input: any chunking, CR/LF variants, comments, limits."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.protocol.sse import EventTooLarge, SSEDecoder

STREAM = (
    b"event: response.created\ndata: {\"a\":1}\n\n"
    b": keep-alive comment\n\n"
    b"data: line one\ndata: line two\n\n"
    b"event: x\r\ndata: crlf \xc3\xa9\r\n\r\n"
    b"data: [DONE]\n\n"
)


def decode_all(chunks, **kwargs):
    decoder = SSEDecoder(**kwargs)
    frames = []
    for chunk in chunks:
        frames.extend(decoder.feed(chunk))
    tail, leftover = decoder.close()
    return frames + tail, leftover, decoder


def test_whole_stream_decodes_fields_and_joins_data_lines():
    frames, leftover, _ = decode_all([STREAM])
    assert [(f.event, f.data) for f in frames] == [
        ("response.created", '{"a":1}'),
        ("", "line one\nline two"),
        ("x", "crlf é"),
        ("", "[DONE]"),
    ]
    assert leftover == b""


@given(st.lists(st.integers(min_value=1, max_value=len(STREAM)), min_size=1, max_size=30))
def test_any_chunking_gives_the_same_frames(cuts):
    points = sorted({c for c in cuts if c < len(STREAM)})
    chunks, start = [], 0
    for point in points:
        chunks.append(STREAM[start:point])
        start = point
    chunks.append(STREAM[start:])
    frames, _, _ = decode_all(chunks)
    expected, _, _ = decode_all([STREAM])
    assert [(f.event, f.data, f.nbytes) for f in frames] == [(f.event, f.data, f.nbytes) for f in expected]


def test_byte_counts_add_up_to_the_stream_length():
    frames, _, _ = decode_all([STREAM])
    # The comment block is not an event, so its bytes are not attributed to any frame.
    comment = len(b": keep-alive comment\n\n")
    assert sum(f.nbytes for f in frames) == len(STREAM) - comment


def test_cr_split_from_lf_across_chunks_is_one_line_end():
    frames, _, _ = decode_all([b"data: a\r", b"\ndata: b\r", b"\n\r", b"\n"])
    assert [f.data for f in frames] == ["a\nb"]


def test_lone_cr_line_endings():
    frames, _, _ = decode_all([b"data: a\rdata: b\r\r"])
    assert [f.data for f in frames] == ["a\nb"]


def test_utf8_split_across_chunks_is_decoded_whole():
    payload = "data: ünïcødé €\n\n".encode()
    frames, _, _ = decode_all([payload[i : i + 1] for i in range(len(payload))])
    assert frames[0].data == "ünïcødé €"


def test_final_event_without_blank_line_is_still_dispatched():
    frames, leftover, _ = decode_all([b"data: {\"x\": 1}"])
    assert [f.data for f in frames] == ['{"x": 1}']
    assert leftover == b""


def test_lines_that_are_not_fields_are_kept_for_the_caller():
    frames, _, decoder = decode_all([b"<html>not sse</html>\n\x00\xff garbage\ndata: ok\n\n"])
    assert [f.data for f in frames] == ["ok"]
    assert decoder.take_ignored() == [b"<html>not sse</html>", b"\x00\xff garbage"]
    assert decoder.take_ignored() == []


def test_an_endless_line_raises_instead_of_growing_forever():
    decoder = SSEDecoder(max_event_bytes=1000)
    decoder.feed(b"data: " + b"x" * 500)
    with pytest.raises(EventTooLarge, match="1000 bytes"):
        decoder.feed(b"x" * 600)


def test_an_event_of_many_lines_is_limited_too():
    decoder = SSEDecoder(max_event_bytes=1000)
    with pytest.raises(EventTooLarge):
        for _ in range(100):
            decoder.feed(b"data: " + b"y" * 50 + b"\n")


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=200), max_size=20))
def test_arbitrary_bytes_never_crash(chunks):
    decoder = SSEDecoder(max_event_bytes=10_000)
    for chunk in chunks:
        for frame in decoder.feed(chunk):
            assert isinstance(frame.data, str)
    decoder.close()


LINES = st.sampled_from([
    b"event: response.output_text.delta", b"event:x", b"event", b"event:", b"event:  two", b"event: \xff",
    b"data: {\"a\":1}", b"data:{}", b"data",
    b"data:  two spaces", b"id: 7", b"id: a\x00b", b"retry: 10", b": comment", b":", b"", b"",
    b"garbage line", b"data: \xc3", b"\xa9 tail", b"id",
])


@settings(max_examples=300)
@given(st.lists(LINES, max_size=40), st.lists(st.integers(min_value=1, max_value=400), max_size=10))
def test_the_lf_only_path_decodes_exactly_as_the_line_by_line_one(lines, cuts):
    # feed() reads LF-only input a whole chunk at a time; _feed_any (any line ends, one line at a
    # time) is the reference it must match in frames, byte counts and ignored lines.
    stream = b"\n".join(lines) + b"\n"
    points = sorted({c for c in cuts if c < len(stream)})
    chunks = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)])]
    fast, reference = SSEDecoder(), SSEDecoder()
    got = [f for chunk in chunks for f in fast.feed(chunk)] + fast.close()[0]
    want = [f for chunk in chunks for f in reference._feed_any(chunk)] + reference.close()[0]
    assert got == want
    assert fast.take_ignored() == reference.take_ignored()


def test_a_crlf_stream_after_lf_chunks_still_decodes():
    frames, _, _ = decode_all([b"data: a\n", b"\n", b"data: b\r", b"\n\r\n", b"data: c\n\n"])
    assert [(f.data, f.nbytes) for f in frames] == [("a", 9), ("b", 11), ("c", 9)]


EVENTS = st.lists(st.lists(LINES, max_size=4).map(lambda lines: b"\n".join(lines) + b"\n\n"), max_size=12)


@settings(max_examples=300)
@given(EVENTS)
def test_an_event_per_chunk_decodes_exactly_as_the_line_by_line_path(events):
    # A slow stream's every read is one whole event, the shape feed() sees most.
    fast, reference = SSEDecoder(), SSEDecoder()
    got = [f for chunk in events for f in fast.feed(chunk)] + fast.close()[0]
    want = [f for chunk in events for f in reference._feed_any(chunk)] + reference.close()[0]
    assert got == want
    assert fast.take_ignored() == reference.take_ignored()


@pytest.mark.parametrize("cut", range(0, 6))
def test_a_byte_order_mark_before_the_first_event_is_dropped(cut):
    stream = b"\xef\xbb\xbf" + b"event: response.created\ndata: {}\n\ndata: x\n\n"
    frames, leftover, decoder = decode_all([stream[:cut], stream[cut:]])
    assert [(f.event, f.data) for f in frames] == [("response.created", "{}"), ("", "x")]
    assert decoder.ignored_lines == [] and leftover == b""
    assert sum(f.nbytes for f in frames) == len(stream)  # the mark's bytes count, to the first event


def test_only_a_leading_byte_order_mark_is_dropped():
    frames, _, decoder = decode_all([b"data: a\n\n\xef\xbb\xbfdata: b\n\n"])
    assert [f.data for f in frames] == ["a"]  # a mark later on is a line that is not a field
    assert decoder.ignored_lines == [b"\xef\xbb\xbfdata: b"]


def test_a_stream_that_is_only_part_of_a_mark_is_left_over_not_lost():
    frames, leftover, decoder = decode_all([b"\xef\xbb"])
    assert frames == [] and decoder.ignored_lines == [b"\xef\xbb"] and leftover == b""


def test_every_event_name_comes_out_as_sent_however_many_a_stream_uses():
    # feed() remembers the names it decoded (a stream repeats a few dozen); past its bound it decodes.
    names = [f"kind.{i}" for i in range(600)] + ["kind.1", "", "kind.599", "é"]
    stream = b"".join(f"event: {name}\ndata: {{}}\n\n".encode() for name in names)
    decoder = SSEDecoder()
    frames = [frame for i in range(0, len(stream), 64) for frame in decoder.feed(stream[i:i + 64])]
    assert [frame.event for frame in frames] == names


def test_an_event_and_data_pair_after_lines_of_an_event_belongs_to_that_event():
    # feed() reads an "event:" line followed by one "data:" line and a blank line as one match;
    # when earlier lines began the event (in this chunk or the last), the pair is part of it.
    chunks = [b"data: a\nevent: b\ndata: c\n\n", b"id: 7\n", b"event: d\ndata: e\n\nevent: f\ndata: g\n\n"]
    frames, _, _ = decode_all(chunks)
    assert [(f.event, f.data, f.id, f.nbytes) for f in frames] == [
        ("b", "a\nc", None, 26), ("d", "e", "7", 24), ("f", "g", "7", 18),
    ]


def test_undecodable_bytes_in_an_event_and_data_pair_are_replaced_not_raised():
    frames, _, _ = decode_all([b"event: x\ndata: {\"a\":\"\xc3\"}\n\n"])
    assert [(f.event, f.data) for f in frames] == [("x", '{"a":"\ufffd"}')]


@pytest.mark.parametrize("event", [
    b"event: response.output_text.delta\ndata: {\"delta\":\"hi\"}\n\n", b"event:x\ndata:{}\n\n",
    b"event: x\ndata:  two spaces\n\n", b"event: \xff\ndata: \xc3\n\n", b"event:\ndata:\n\n", b"event: a\ndata\n\n",
    b"event: a\ndatum: 1\n\n", b"event: a\n: note\n\n", b"event: a\ndata: 1\ndata: 2\n\n",
])
@pytest.mark.parametrize("before", [b"", b"id: 7\n\n", b"data: begun\n", b"event: a\n"])
def test_a_chunk_of_one_event_and_data_pair_decodes_as_the_line_by_line_path(event, before):
    fast, reference = SSEDecoder(), SSEDecoder()
    got = fast.feed(before) + fast.feed(event) + fast.feed(event) + fast.close()[0]
    want = reference._feed_any(before) + reference._feed_any(event) + reference._feed_any(event) + reference.close()[0]
    assert got == want
    assert fast.take_ignored() == reference.take_ignored()


DELTA_PREFIX = b"event: d\ndata: "
MATCHING = (
    b"event: response.created\ndata: {\"a\":1}\n\n"
    + b"".join(DELTA_PREFIX + b'{"n":%d,"text":"%s"}\n\n' % (n, b"x" * (n % 50)) for n in range(60))
    + b": comment\n\n" + DELTA_PREFIX + b"one\n\n" + b"data: two\ndata: lines\n\n"
    + b"".join(DELTA_PREFIX + b'{"n":%d}\n\n' % n for n in range(40))
    + b"id: 9\n\n" + b"".join(DELTA_PREFIX + b'{"n":%d}\n\n' % n for n in range(40))
    + b"event: d\r\ndata: crlf\r\n\r\n" + b"".join(DELTA_PREFIX + b'{"n":%d}\n\n' % n for n in range(40))
    + b"\n" + b"".join(DELTA_PREFIX + b'{"n":%d}\n\n' % n for n in range(40)) + b"data: unterminated"
)


def decode_matching(chunks):
    decoder = SSEDecoder()
    frames, matched = [], 0
    for chunk in chunks:
        before, events = decoder.feed_matching(chunk, DELTA_PREFIX)
        frames.extend(before)
        if events is not None:
            assert [frame.data.encode() for frame in events.frames()] == events.values
            assert sum(frame.nbytes for frame in events.frames()) == events.nbytes
            frames.extend(events.frames())
            matched += len(events.values)
    tail, leftover = decoder.close()
    return frames + tail, leftover, matched


@given(st.lists(st.integers(min_value=1, max_value=len(MATCHING)), max_size=12))
def test_feed_matching_gives_feeds_frames_in_any_chunking(cuts):
    points = sorted({c for c in cuts if c < len(MATCHING)})
    chunks = [MATCHING[a:b] for a, b in zip([0, *points], [*points, len(MATCHING)])]
    frames, leftover, _ = decode_matching(chunks)
    assert (frames, leftover) == decode_all(chunks)[:2]


def test_feed_matching_returns_a_reads_events_of_the_prefix_as_their_values():
    stream = b"event: response.created\ndata: {}\n\n" + b"".join(DELTA_PREFIX + b'{"n":%d}\n\n' % n for n in range(304))
    frames, _, matched = decode_matching([stream[i:i + 2000] for i in range(0, len(stream), 2000)])
    assert matched > 200 and len(frames) == 305  # most of the prefix's events came back as values
    decoder = SSEDecoder()
    decoder.feed(b"event: x\n")  # an event begun in an earlier read, completed by this one
    before, events = decoder.feed_matching(b"data: 1\n\n" + DELTA_PREFIX + b"v1\n\n" + DELTA_PREFIX + b"v2\n\n"
                                           + b"x" * 1024 + b"\n" + DELTA_PREFIX + b"v3\n\n" + DELTA_PREFIX + b"v4",
                                           DELTA_PREFIX)
    # A line not of the prefix among them: every frame, as feed gives them.
    assert [(f.event, f.data) for f in before] == [("x", "1"), ("d", "v1"), ("d", "v2"), ("d", "v3")]
    assert events is None
    decoder = SSEDecoder()
    decoder.feed(b"event: x\n")
    before, events = decoder.feed_matching(b"data: 1\n\n" + DELTA_PREFIX + b"v1\n\n" + DELTA_PREFIX + b"v" * 1024
                                           + b"\n\n" + DELTA_PREFIX + b"v3", DELTA_PREFIX)
    assert [(f.event, f.data) for f in before] == [("x", "1")] and events.values == [b"v1", b"v" * 1024]
    assert decoder.close()[0][0].data == "v3"
