"""Upstream JSON of another shape than the API's is recorded as it came, never a crash of the run:
its text and token figures take nothing from it."""

import json

import pytest

from streams.live.recorder import RunRecorder
from streams.protocol.sse import SSEFrame

CHUNKS = {
    "choices a number": {"object": "chat.completion.chunk", "choices": 5},
    "choices an object": {"object": "chat.completion.chunk", "choices": {"a": 1}},
    "choices a string": {"object": "chat.completion.chunk", "choices": "abc"},
    "a choice a number": {"object": "chat.completion.chunk", "choices": [5]},
    "a delta a string": {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": "x"}]},
}


@pytest.mark.parametrize("chunk", list(CHUNKS.values()), ids=list(CHUNKS))
def test_a_chat_chunk_of_another_shape_is_stored_and_adds_no_text(chunk):
    recorder = RunRecorder(1)
    recorder.accept_frame(SSEFrame(event="", data=json.dumps(chunk), id=None, nbytes=10), 1.0)
    assert [row[4] for row in recorder.buffer] == [json.dumps(chunk)]
    assert recorder.text_parts == []
    assert recorder.metrics.snapshot(duration_ms=1.0)["events"] == 1


@pytest.mark.parametrize("choices", [5, "abc", {"a": 1}, [], [5]])
def test_a_whole_chat_answer_of_another_shape_ends_the_run_without_text(choices):
    recorder = RunRecorder(1)
    status, _error = recorder.understand_body({"object": "chat.completion", "choices": choices})
    assert status == "completed"
    assert recorder.text_parts == []
