import pytest

from streams.protocol.metrics import MetricsAccumulator, compute_metrics, percentile


def test_percentile_nearest_rank():
    values = sorted([5.0, 1.0, 3.0, 2.0, 4.0])
    assert percentile(values, 0.5) == 3.0
    assert percentile(values, 0.95) == 5.0
    assert percentile([], 0.5) is None


def test_metrics_from_a_small_run():
    events = [
        (100.0, "response.created", {}, 10),
        (150.0, "response.in_progress", {}, 10),
        (400.0, "response.output_text.delta", {}, 20),
        (420.0, "response.output_text.delta", {}, 20),
        (460.0, "response.output_text.delta", {}, 20),
        (500.0, "response.completed", {"response": {"usage": {"output_tokens": 3}}}, 30),
    ]
    figures = compute_metrics(events)
    assert figures["ttfe_ms"] == 100.0
    assert figures["ttft_ms"] == 400.0
    assert figures["duration_ms"] == 500.0
    assert figures["events"] == 6
    assert figures["output_tokens"] == 3
    assert figures["output_tokens_estimated"] is False
    assert figures["tokens_per_s"] == 50.0  # 3 tokens over 60 ms of deltas
    assert figures["gap_p50_ms"] == 20.0
    assert figures["gap_max_ms"] == 40.0
    assert figures["bytes"] == 110
    assert figures["counts"]["response.output_text.delta"] == 3


def test_tokens_are_estimated_from_deltas_without_usage():
    acc = MetricsAccumulator()
    acc.observe(0, "response.output_text.delta")
    acc.observe(1000, "response.function_call_arguments.delta")
    snap = acc.snapshot()
    assert snap["output_tokens"] == 2 and snap["output_tokens_estimated"] is True
    assert snap["tokens_per_s"] == 2.0


def test_audio_chunks_are_not_tokens():
    acc = MetricsAccumulator()
    acc.observe(5, "response.audio.delta")
    assert acc.snapshot()["ttft_ms"] is None


def test_chat_chunks_with_content_count_as_tokens_and_usage_is_read():
    def chunk(delta, usage=None):
        payload = {"object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": delta}] if delta is not None else []}
        if usage:
            payload["usage"] = usage
        return payload

    figures = compute_metrics([
        (10.0, "chat.completion.chunk", chunk({"role": "assistant"}), 0),
        (30.0, "chat.completion.chunk", chunk({"content": "Hi"}), 0),
        (50.0, "chat.completion.chunk", chunk({"content": " there"}), 0),
        (60.0, "chat.completion.chunk", chunk(None, {"completion_tokens": 2, "prompt_tokens": 5}), 0),
    ])
    assert figures["ttft_ms"] == 30.0
    assert figures["output_tokens"] == 2 and figures["output_tokens_estimated"] is False


def test_a_long_run_keeps_its_gaps_at_eight_bytes_each():
    # A run keeps every inter-token gap for its whole life (1,200 at 20 tokens/s for a minute):
    # as float objects in a list they were ~32 bytes each, the largest part of a run's metrics.
    acc = MetricsAccumulator()
    for i in range(1201):
        acc.observe(i * 50.0 + (30.0 if i == 600 else 0.0), "response.output_text.delta")
    assert len(acc.delta_gaps) == 1200
    assert acc.delta_gaps.itemsize == 8
    snap = acc.snapshot()
    assert snap["gap_p50_ms"] == 50.0 and snap["gap_max_ms"] == 80.0


@pytest.mark.parametrize("event_type", ["response.output_text.delta", "response.created",
                                        "response.reasoning_text.delta", "response.audio.delta", "x"])
@pytest.mark.parametrize("counts", [[1], [3], [2, 1, 5], [1, 4], [0, 2]])
def test_observe_many_is_observe_per_event(event_type, counts):
    """A read's events of one type at once: the same figures as one observe per event."""
    together, one_by_one = MetricsAccumulator(), MetricsAccumulator()
    for accumulator in (together, one_by_one):
        accumulator.observe_bytes(1.0)
        accumulator.observe(1.5, "response.created", 10)
    for index, count in enumerate(counts):
        t = 2.0 + index * 0.7
        together.observe_many(t, event_type, count, 40 * count)
        for _ in range(count):
            one_by_one.observe(t, event_type, 40)
    assert together.snapshot() == one_by_one.snapshot()
    assert list(together.delta_gaps) == list(one_by_one.delta_gaps)
