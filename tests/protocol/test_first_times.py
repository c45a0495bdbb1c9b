"""Each "time to first ..." means one thing (docs/metrics.md): computed by MetricsAccumulator."""

from streams.protocol.metrics import DEFINITIONS, MetricsAccumulator, column_values, compute_metrics


def test_each_first_time_is_its_own_event():
    events = [
        (90.0, "response.created", {}, 10),
        (95.0, "response.in_progress", {}, 10),
        (120.0, "response.reasoning_summary_text.delta", {}, 10),
        (150.0, "response.reasoning_text.delta", {}, 10),
        (200.0, "response.function_call_arguments.delta", {}, 10),
        (300.0, "response.output_text.delta", {}, 10),
        (350.0, "response.output_text.delta", {}, 10),
        (400.0, "response.completed", {"response": {"usage": {"output_tokens": 5}}}, 10),
    ]
    acc = MetricsAccumulator()
    acc.observe_bytes(80.0)
    acc.observe_bytes(85.0)  # only the first chunk counts
    for t, kind, payload, nbytes in events:
        acc.observe_payload(t, kind, payload, nbytes)
    m = acc.snapshot(duration_ms=410.0)
    assert m["ttfb_ms"] == 80.0
    assert m["ttfe_ms"] == 90.0
    assert m["ttfc_ms"] == 90.0
    assert m["ttfr_ms"] == 120.0
    assert m["ttfa_ms"] == 200.0
    assert m["ttft_ms"] == 300.0  # output text only: reasoning and arguments came earlier
    assert m["ttfd_ms"] == 120.0  # any delta
    assert m["duration_ms"] == 410.0


def test_without_a_reader_the_first_byte_is_the_first_event_and_absent_kinds_are_none():
    m = compute_metrics([(5.0, "response.in_progress", {}, 1), (9.0, "response.output_text.delta", {}, 1)])
    assert m["ttfb_ms"] == 5.0 and m["ttfc_ms"] is None
    assert m["ttfr_ms"] is None and m["ttfa_ms"] is None and m["ttft_ms"] == 9.0


def test_chat_chunks_classified_by_what_their_delta_carries():
    def chunk(delta):
        return {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta}]}

    m = compute_metrics([
        (10.0, "chat.completion.chunk", chunk({"role": "assistant"}), 0),
        (20.0, "chat.completion.chunk", chunk({"reasoning_content": "hmm"}), 0),
        (30.0, "chat.completion.chunk", chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}), 0),
        (40.0, "chat.completion.chunk", chunk({"content": "Hi"}), 0),
    ])
    assert (m["ttfr_ms"], m["ttfa_ms"], m["ttft_ms"], m["ttfd_ms"]) == (20.0, 30.0, 40.0, 20.0)


def test_column_values_take_finite_numbers_only():
    values = column_values({"ttft_ms": 12.5, "duration_ms": "x", "tokens_per_s": True, "ttfb_ms": float("nan")})
    assert values["ttft_ms"] == 12.5
    assert values["duration_ms"] is None and values["tokens_per_s"] is None and values["ttfb_ms"] is None
    assert set(values) == {"ttfb_ms", "ttfc_ms", "ttft_ms", "ttfr_ms", "ttfa_ms", "duration_ms", "tokens_per_s",
                           "gap_p95_ms"}
    assert column_values(None)["ttft_ms"] is None


def test_every_column_figure_is_defined():
    for key in ("ttfb_ms", "ttfe_ms", "ttfc_ms", "ttft_ms", "ttfr_ms", "ttfa_ms", "duration_ms", "tokens_per_s"):
        assert DEFINITIONS[key]
