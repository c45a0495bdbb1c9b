"""RunRecorder.accept_frame on its own (no database): what it keeps from each decoded frame."""

import json

from streams.live.recorder import RunRecorder
from streams.protocol.sse import SSEFrame

BIG = 123456789012345678901234  # beyond 64 bits: orjson would make it a float


def frame(payload, event=""):
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return SSEFrame(event=event, data=data, id=None, nbytes=len(data) + 8)


def test_deltas_terminal_usage_and_sequence_numbers_are_understood():
    recorder = RunRecorder(1)
    recorder.accept_frame(frame({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_1"}}), 1.0)
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 1, "delta": "Hi"}), 2.0)
    recorder.accept_frame(frame({"type": "response.completed", "sequence_number": 2,
                                 "response": {"id": "resp_1", "usage": {"output_tokens": BIG}}}), 3.0)
    assert [event_type for _, _, _, event_type, _ in recorder.buffer] == [
        "response.created", "response.output_text.delta", "response.completed"]
    assert recorder.response_id == "resp_1" and recorder.text_parts == ["Hi"] and recorder.last_upstream_seq == 2
    # The run keeps the final response's numbers exactly, as json.loads read them.
    assert recorder.terminal_response["usage"]["output_tokens"] == BIG
    assert recorder.metrics.output_tokens == (BIG, False)


def test_a_chat_chunk_with_usage_keeps_it_exactly():
    recorder = RunRecorder(1)
    recorder.accept_frame(frame({"object": "chat.completion.chunk", "choices": [],
                                 "usage": {"completion_tokens": BIG}}), 1.0)
    assert recorder.metrics.output_tokens == (BIG, False)


def test_json_the_standard_library_accepts_is_not_malformed():
    recorder = RunRecorder(1)
    recorder.accept_frame(frame('{"type": "response.output_text.delta", "delta": "x", "logprob": NaN}'), 1.0)
    recorder.accept_frame(frame('{"type": "response.output_text.delta", "delta": "\\ud800"}'), 2.0)
    recorder.accept_frame(frame("{not json"), 3.0)
    assert [event_type for _, _, _, event_type, _ in recorder.buffer] == [
        "response.output_text.delta", "response.output_text.delta", "streamscope.malformed"]
    assert recorder.text_parts == ["x", "\ud800"]
    assert json.loads(recorder.buffer[2][4])["error"].startswith("invalid JSON in data line: Expecting")


def test_events_already_stored_before_a_resume_are_skipped():
    recorder = RunRecorder(1)
    recorder.last_upstream_seq = 5
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 5, "delta": "old"}), 1.0)
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 6, "delta": "new"}), 2.0)
    assert [json.loads(data)["delta"] for _, _, _, _, data in recorder.buffer] == ["new"]


def test_the_buffer_holds_the_rows_the_store_takes_and_a_published_batch_is_their_records():
    from streams.pipeline.flush_clock import RoundBatch
    from streams.protocol.records import encode_record

    recorder = RunRecorder(7)
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 0, "delta": "a"}), 1.25)
    recorder.accept_frame(frame('{"type": "response.output_text.delta", "delta": "b"}', event="odd"), 2.5)
    rows = list(recorder.buffer)
    assert [row[:4] for row in rows] == [(7, 0, 1.25, "response.output_text.delta"),
                                         (7, 1, 2.5, "response.output_text.delta")]
    assert rows[1][4] == '{"type": "response.output_text.delta", "delta": "b"}'  # as received
    taken = RoundBatch(7, rows, None, 0.0)
    assert taken.first_seq == 0
    records = [encode_record(seq, t, event_type, data) for _, seq, t, event_type, data in rows]
    assert taken.published() == (7, 0, records)
    assert taken.rows == []  # let go once encoded (RoundBatch.published)
