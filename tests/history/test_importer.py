"""Importing recorded streams: every recording, each format, the limits, and arbitrary bytes."""

from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.history.importer import ImportFailed, import_stream, parse_stream
from streams.models import Event, Run

EXPECTED_STATUS = {
    "background-resume-starting-after-0.sse": "completed",
    "background-stream.sse": "completed",
    "error-event-then-failed.sse": "failed",
    "file-search-with-citation.sse": "completed",
    "function-call-2025-03-no-sequence-numbers.sse": "completed",
    "incomplete-max-output-tokens.sse": "incomplete",
    "openrouter-reasoning-text-and-done-marker.sse": "completed",
    "reasoning-summary-then-text.sse": "completed",
    "text-with-logprobs.sse": "completed",
    "web-search-with-reasoning.sse": "completed",
}


def data_lines(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def stored(run: Run) -> list[tuple[int, float, str, str]]:
    return list(run.events.order_by("seq").values_list("seq", "t", "type", "data"))


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(EXPECTED_STATUS))
def test_every_recording_imports(recordings, user, name):
    raw = (recordings / name).read_bytes()
    run = import_stream(raw, owner=user, filename=name)
    run.refresh_from_db()

    lines = data_lines(raw.decode())
    events = stored(run)
    assert [data for _, _, _, data in events if data != '{"raw":"[DONE]"}'] == [
        line for line in lines if line != "[DONE]"
    ]  # Event.data is the data line exactly as in the file
    assert [seq for seq, *_ in events] == list(range(len(lines)))
    assert all(t == 0.0 for _, t, _, _ in events)  # SSE files carry no arrival times
    assert run.event_count == len(lines)
    assert (run.imported, run.provider, run.source_name, run.owner) == (True, "import", name, user)
    assert run.status == EXPECTED_STATUS[name]
    terminal = json.loads(lines[-2] if lines[-1] == "[DONE]" else lines[-1])["response"]
    assert run.model == terminal["model"]
    assert run.response_id == terminal["id"]
    assert run.usage == terminal["usage"]
    assert run.metrics["events"] == len(lines)
    assert run.metrics["timed"] is False
    assert run.metrics["ttfe_ms"] is None and run.metrics["duration_ms"] is None
    assert run.metrics["bytes"] > 0
    assert run.request.get("model") == terminal["model"]  # reconstructed from the echo
    assert "input" not in run.request


@pytest.mark.django_db
def test_output_text_and_error(recordings, user):
    run = import_stream((recordings / "reasoning-summary-then-text.sse").read_bytes(), owner=user)
    assert run.output_text.startswith("I'm not a road safety professional")
    assert len(run.output_text) > 500
    assert run.error is None

    failed = import_stream((recordings / "error-event-then-failed.sse").read_bytes(), owner=user)
    assert failed.status == "failed"
    assert failed.error["code"] == "insufficient_quota"
    assert failed.error["message"].startswith("You exceeded your current quota")
    assert failed.error["http_status"] is None
    assert failed.error["body"]["type"] == "insufficient_quota"
    assert failed.usage is None


@pytest.mark.django_db
def test_done_marker_and_comment(recordings, user):
    run = import_stream(
        (recordings / "openrouter-reasoning-text-and-done-marker.sse").read_bytes(), owner=user
    )
    last = run.events.order_by("-seq").first()
    assert last.type == "streamscope.done"
    assert last.payload == {"raw": "[DONE]"}
    assert not run.events.filter(data__contains="OPENROUTER PROCESSING").exists()
    assert run.output_text == "4"
    assert run.request == {"model": "openai/gpt-oss-20b", "tool_choice": "auto", "stream": True}


@pytest.mark.django_db
def test_crlf_gives_the_same_events(recordings, user):
    raw = (recordings / "text-with-logprobs.sse").read_bytes()
    lf = import_stream(raw, owner=user)
    crlf = import_stream(raw.replace(b"\n", b"\r\n"), owner=user)
    assert stored(crlf) == stored(lf)
    assert crlf.output_text == lf.output_text == "The capital of Minas Gerais is Belo Horizonte."


@pytest.mark.django_db
def test_malformed_data_and_stray_lines_are_kept(user):
    content = (
        b'data: {"type":"response.created","response":{"id":"r1","model":"m","output":[]}}\n\n'
        b"data: {not json\n\n"
        b"this line is not SSE\n"
        b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
        b'"output_index":0,"content_index":0,"item_id":"x","delta":"Hi"}\n\n'
    )
    run = import_stream(content, owner=user)
    events = list(run.events.order_by("seq"))
    assert [e.type for e in events] == [
        "response.created",
        "streamscope.malformed",
        "streamscope.malformed",
        "response.output_text.delta",
    ]
    assert events[1].payload["raw"] == "{not json"
    assert events[1].payload["error"].startswith("invalid JSON in data line: ")
    assert events[1].payload["where"] == "data"
    assert events[2].payload["raw"] == "this line is not SSE"
    assert events[2].payload["where"] == "line"
    assert run.status == "interrupted"  # no terminal event
    assert run.output_text == "Hi"
    assert run.model == "m" and run.response_id == "r1"


@pytest.mark.django_db
def test_error_body_becomes_a_failed_run(recordings, user):
    raw = (recordings / "http-400-error-body.json").read_bytes()
    run = import_stream(raw, owner=user, filename="http-400-error-body.json")
    assert run.status == "failed"
    assert run.event_count == 0 and not run.events.exists()
    assert run.error == {
        "message": "Invalid 'temperature': decimal below minimum value. Expected a value >= 0, "
        "but got -1 instead.",
        "code": "decimal_below_min_value",
        "http_status": None,
        "body": json.loads(raw),
    }


@pytest.mark.django_db
def test_error_without_terminal_is_failed(user):
    content = (
        b'data: {"type":"response.created","response":{"id":"r","model":"m"}}\n\n'
        b'data: {"type":"error","code":"server_error","message":"oops","param":null}\n\n'
    )
    run = import_stream(content, owner=user)
    assert run.status == "failed"
    assert run.error["message"] == "oops" and run.error["code"] == "server_error"


@pytest.mark.django_db
def test_chat_completion_stream(user):
    chunks = [
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "llama",
            "choices": [
                {
                    "index": 0,
                    "delta": {"role": "assistant", "content": "Hel"},
                    "finish_reason": None,
                }
            ],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "llama",
            "choices": [{"index": 0, "delta": {"content": "lo"}, "finish_reason": "stop"}],
        },
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "model": "llama",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
        },
    ]
    content = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    run = import_stream(content.encode(), owner=user)
    assert [e.type for e in run.events.order_by("seq")] == ["chat.completion.chunk"] * 3 + [
        "streamscope.done"
    ]
    assert (run.status, run.output_text, run.model, run.response_id) == (
        "completed",
        "Hello",
        "llama",
        "c1",
    )
    assert run.usage["total_tokens"] == 5
    assert run.request == {}


@pytest.mark.django_db
def test_json_lines_and_json_array_of_events(recordings, user):
    lines = data_lines((recordings / "background-stream.sse").read_text())
    as_lines = import_stream("\n".join(lines).encode(), owner=user)
    assert [d for *_, d in stored(as_lines)] == lines
    assert as_lines.status == "completed" and as_lines.output_text == "2 + 2 equals 4."

    as_array = import_stream(("[" + ",".join(lines) + "]").encode(), owner=user)
    assert [json.loads(d) for *_, d in stored(as_array)] == [json.loads(x) for x in lines]
    assert as_array.status == "completed"


def har(entries: list[dict]) -> bytes:
    return json.dumps(
        {"log": {"version": "1.2", "creator": {"name": "test"}, "entries": entries}}
    ).encode()


def har_entry(
    body: str,
    *,
    url="https://api.openai.com/v1/responses",
    base64_body=False,
    mime="text/event-stream; charset=utf-8",
    status=200,
    request=None,
) -> dict:
    content = {
        "size": len(body),
        "mimeType": mime,
        "text": base64.b64encode(body.encode()).decode() if base64_body else body,
    }
    if base64_body:
        content["encoding"] = "base64"
    return {
        "startedDateTime": "2025-09-16T20:00:00.000Z",
        "time": 950.5,
        "request": {
            "method": "POST",
            "url": url,
            "headers": [{"name": "Authorization", "value": "Bearer sk-secret"}],
            "postData": {
                "mimeType": "application/json",
                "text": json.dumps(request or {"model": "gpt-4o", "input": "hi", "stream": True}),
            },
        },
        "response": {"status": status, "headers": [], "content": content},
        "timings": {
            "blocked": 1.5,
            "dns": -1,
            "connect": 20,
            "send": 0.5,
            "wait": 300,
            "receive": 628.5,
        },
    }


@pytest.mark.django_db
def test_har_import(recordings, user):
    sse = (recordings / "background-stream.sse").read_text()
    other = (recordings / "text-with-logprobs.sse").read_text()
    content = har(
        [
            har_entry(
                '{"object":"list"}', url="https://api.openai.com/v1/models", mime="application/json"
            ),
            har_entry(sse, base64_body=True),
            har_entry(other, request={"model": "gpt-4o", "input": "capital?"}),
        ]
    )
    run = import_stream(content, owner=user, filename="session.har")
    assert run.request == {"model": "gpt-4o", "input": "hi", "stream": True}
    assert "sk-secret" not in json.dumps(run.request)
    assert run.input_text == "hi"
    assert [d for *_, d in stored(run)] == data_lines(sse)
    assert {t for _, t, _, _ in stored(run)} == {322.0}  # time to first byte
    assert run.metrics["ttfe_ms"] == 322.0 and run.metrics["duration_ms"] == 950.5
    assert run.metrics["timed"] is False and run.metrics["ttft_ms"] is None
    assert run.started_at.isoformat() == "2025-09-16T20:00:00+00:00"
    assert run.finished_at.isoformat() == "2025-09-16T20:00:00.950500+00:00"
    assert any("2 event-stream responses" in note for note in run.import_notes)

    second = import_stream(content, owner=user, har_entry=1)
    assert second.output_text == "The capital of Minas Gerais is Belo Horizonte."
    assert second.request["input"] == "capital?"
    with pytest.raises(ImportFailed, match="entry 2 does not exist"):
        import_stream(content, owner=user, har_entry=2)


@pytest.mark.django_db
def test_har_without_stream_body_or_with_http_error(user):
    missing = har_entry("")
    missing["response"]["content"].pop("text")
    with pytest.raises(ImportFailed, match="no response body"):
        import_stream(har([missing]), owner=user)
    with pytest.raises(ImportFailed, match="no text/event-stream response"):
        import_stream(har([har_entry("{}", mime="application/json")]), owner=user)

    body = '{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
    run = import_stream(har([har_entry(body, mime="application/json", status=401)]), owner=user)
    assert run.status == "failed"
    assert run.error["http_status"] == 401 and run.error["code"] == "invalid_api_key"
    assert run.request["model"] == "gpt-4o"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"  \n\r\n\t ", "empty"),
        (b"\xef\xbb\xbf", "empty"),
        (b"hello world\nthis is a text file\n", "not a recognised stream format"),
        (b"\x00\x01\x02\xff\xfe", "not a recognised stream format"),
        (b'{"hello": "world"}', "not a recognised stream format"),
        (b'{"object": "response", "id": "resp_1", "output": []}', "not a stream"),
        (b'{"streamscope": 99, "run": {}}', "unsupported Streamscope export version 99"),
        (b"{broken json", "not a recognised stream format"),
    ],
)
def test_clear_errors(user, content, message):
    with pytest.raises(ImportFailed, match=message):
        import_stream(content, owner=user)
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_size_limit(user, settings):
    settings.STREAMSCOPE_MAX_IMPORT_BYTES = 100
    with pytest.raises(ImportFailed, match="import limit is 100 bytes"):
        import_stream(b"data: {}\n\n" * 20, owner=user)


@pytest.mark.django_db
def test_event_limit(recordings, user, settings):
    settings.STREAMSCOPE_MAX_EVENTS_PER_RUN = 10
    with pytest.raises(ImportFailed, match="more than 10 events"):
        import_stream((recordings / "background-stream.sse").read_bytes(), owner=user)
    assert not Run.objects.exists() and not Event.objects.exists()


@pytest.mark.django_db
def test_event_size_limit(user, settings):
    settings.STREAMSCOPE_MAX_EVENT_BYTES = 1000
    with pytest.raises(ImportFailed, match="maximum size of 1000 bytes"):
        import_stream(b'data: {"type":"x","pad":"' + b"a" * 5000 + b'"}\n\n', owner=user)


@pytest.mark.django_db
def test_many_events_are_inserted_in_batches(user, django_assert_max_num_queries):
    delta = (
        'data: {"type":"response.output_text.delta","output_index":0,"content_index":0,'
        '"item_id":"m","delta":"x"}\n\n'
    )
    content = (
        'data: {"type":"response.output_item.added","output_index":0,"item":'
        '{"type":"message","id":"m","content":[]}}\n\n' + delta * 2500
    ).encode()
    # SQLite caps the parameters of one statement, so Django splits each batch of 1000 again;
    # still a few dozen statements, not one per event.
    with django_assert_max_num_queries(40):
        run = import_stream(content, owner=user)
    assert run.events.count() == 2501 == run.event_count
    assert run.output_text == "x" * 2500
    assert run.metrics["counts"]["response.output_text.delta"] == 2500


@pytest.mark.django_db
def test_strange_text_is_stored_safely(user):
    # JSON escapes can carry NUL and lone surrogates, which databases refuse.
    content = (
        b'data: {"type":"response.created","response":{"id":"r\\u0000","model":"m\\ud800"}}\n\n'
        b'data: {"type":"weird\\u0000type"}\n\n'
    )
    run = import_stream(content, owner=user)
    run.refresh_from_db()
    assert run.model == "m\ufffd" and run.response_id == "r\ufffd"
    assert run.events.order_by("seq").last().type == "weird\ufffdtype"


def test_parse_stream_needs_no_database(recordings):
    parsed = parse_stream(
        (recordings / "function-call-2025-03-no-sequence-numbers.sse").read_bytes()
    )
    assert parsed.format == "sse"
    assert [e.type for e in parsed.events][:2] == ["response.created", "response.in_progress"]


SSE_LINES = st.sampled_from(
    [
        b"data: [DONE]",
        b"data: {",
        b'data: {"type":"response.created","response":{"id":"r"}}',
        b'data: {"type":"response.output_text.delta","output_index":0,"delta":"a"}',
        b'data: {"type":"response.completed","response":{"output":[{"type":"message"}]}}',
        b'data: {"type":"error","error":{"message":"x"}}',
        b'data: {"object":"chat.completion.chunk"}',
        b"event: response.created",
        b": comment",
        b"",
        b"\r",
        b"id: 1",
        b"retry: x",
        b"data",
        b'{"streamscope": 1, "run": {}}',
        b'{"seq":0,"t":1,"type":"x","data":"{}"}',
        b"[",
        b"{",
        b'{"log": {"entries": []}}',
        b'{"error": "nope"}',
    ]
)


@pytest.mark.django_db
@settings(
    max_examples=150,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(content=st.binary(max_size=2000))
def test_arbitrary_bytes_import_or_fail_cleanly(user, content):
    try:
        run = import_stream(content, owner=user)
    except ImportFailed as exc:
        assert str(exc)
    else:
        assert run.pk is not None and run.event_count == run.events.count()


@pytest.mark.django_db
@settings(
    max_examples=200,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lines=st.lists(SSE_LINES | st.binary(max_size=40), max_size=40),
    newline=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_sse_like_bytes_import_or_fail_cleanly(user, lines, newline):
    try:
        run = import_stream(newline.join(lines), owner=user)
    except ImportFailed as exc:
        assert str(exc)
    else:
        assert run.status in {"completed", "incomplete", "failed", "interrupted", "cancelled"}
        assert run.event_count == run.events.count()
        for event in run.events.all():
            json.loads(event.data) if event.type.startswith("streamscope.") else None


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=12)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
SAMPLE_SSE = (
    'event: response.created\ndata: {"type":"response.created","response":{"id":"r",'
    '"model":"m"}}\n\ndata: [DONE]\n\n'
)


@pytest.mark.django_db
@settings(
    max_examples=100,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    entries=st.lists(
        st.fixed_dictionaries(
            {
                "request": JSON_VALUES
                | st.just({"postData": {"text": '{"model": "x", "input": "hi"}'}}),
                "response": st.fixed_dictionaries(
                    {
                        "status": st.sampled_from([200, 400, 500]) | JSON_VALUES,
                        "headers": JSON_VALUES,
                        "content": st.fixed_dictionaries(
                            {
                                "mimeType": st.sampled_from(
                                    ["text/event-stream", "application/json"]
                                )
                                | JSON_VALUES,
                                "text": st.sampled_from(
                                    [
                                        SAMPLE_SSE,
                                        base64.b64encode(SAMPLE_SSE.encode()).decode(),
                                        '{"error": {"message": "no"}}',
                                        "",
                                        "@@@",
                                    ]
                                )
                                | JSON_VALUES,
                                "encoding": st.sampled_from(["base64", ""]) | JSON_VALUES,
                            }
                        ),
                    }
                ),
                "timings": st.dictionaries(
                    st.sampled_from(["blocked", "dns", "wait", "send"]),
                    JSON_VALUES | st.floats(min_value=-1, max_value=1e308),
                ),
                "time": JSON_VALUES | st.floats(min_value=0, max_value=1e308),
                "startedDateTime": st.sampled_from(["2025-01-01T00:00:00Z", "yesterday"])
                | JSON_VALUES,
            }
        ),
        max_size=3,
    ),
    har_entry_index=st.none() | st.integers(min_value=-1, max_value=3),
)
def test_har_like_documents_import_or_fail_cleanly(user, entries, har_entry_index):
    try:
        run = import_stream(har(entries), owner=user, har_entry=har_entry_index)
    except ImportFailed as exc:
        assert str(exc)
    else:
        assert run.status in {"completed", "failed", "interrupted"}


@pytest.mark.django_db
@settings(
    max_examples=100,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    run_fields=st.dictionaries(
        st.sampled_from(
            [
                "model",
                "request",
                "status",
                "output_text",
                "usage",
                "metrics",
                "error",
                "response_id",
                "started_at",
                "finished_at",
            ]
        ),
        JSON_VALUES | st.sampled_from(["completed", "streaming", "2025-01-01T00:00:00+00:00"]),
    ),
    records=st.lists(
        st.fixed_dictionaries(
            {
                "t": JSON_VALUES,
                "type": JSON_VALUES | st.just("x"),
                "data": JSON_VALUES | st.just("{}"),
            }
        ),
        max_size=5,
    ),
)
def test_jsonl_like_documents_import_or_fail_cleanly(user, run_fields, records):
    lines = [json.dumps({"streamscope": 1, "run": run_fields})] + [json.dumps(r) for r in records]
    try:
        run = import_stream("\n".join(lines).encode(), owner=user)
    except ImportFailed as exc:
        assert str(exc)
    else:
        run.refresh_from_db()
        assert run.event_count == len(records) == run.events.count()
