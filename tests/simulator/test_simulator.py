"""The simulator over real HTTP (a Daphne subprocess), through the official openai SDK and httpx."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from simulator.pacing import encode_sse
from simulator.scenarios import SCENARIOS, build_events, scenario_ids

FAST = {"sim_tokens_per_s": "max", "sim_tokens": "12"}
PROMPT = "How do server-sent events work?"
SUCCEEDING = [s.id for s in SCENARIOS if s.outcome in ("completed", "stalled")]
STREAMED = [
    s.id for s in SCENARIOS if s.outcome in ("completed", "stalled", "incomplete", "failed")
]


@pytest.fixture
def client(sim_server: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="sim-test-key", base_url=sim_server, max_retries=0, timeout=30)


def frames_of(body: bytes) -> list[tuple[str, dict]]:
    """(event name, data) of each SSE frame; asserts the exact framing the real API uses."""
    assert body.endswith(b"\n\n")
    frames = []
    for block in body[:-2].split(b"\n\n"):
        event_line, data_line = block.split(b"\n")
        assert event_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        frames.append((event_line[7:].decode(), json.loads(data_line[6:])))
    return frames


def post_raw(sim_server: str, body: dict, path: str = "/responses") -> httpx.Response:
    return httpx.post(sim_server + path, json=body, timeout=30)


def test_models_list_every_scenario_with_the_default_first(client):
    models = client.models.list().data
    assert [m.id for m in models] == scenario_ids()
    assert models[0].id == "sim-text"
    assert all(
        m.owned_by == "streamscope-simulator" and m.model_extra["description"] for m in models
    )
    assert client.models.retrieve("sim-mcp").id == "sim-mcp"


@pytest.mark.parametrize("model", SUCCEEDING)
def test_sdk_accumulator_accepts_every_succeeding_scenario(client, model):
    metadata = {**FAST, "sim_seed": "sdk", "sim_stall_ms": "0"}
    with client.responses.stream(model=model, input=PROMPT, metadata=metadata) as stream:
        completed = [event for event in stream if event.type == "response.completed"]
        final = stream.get_final_response()
    assert len(completed) == 1
    assert final == completed[0].response
    assert final.status == "completed" and final.usage is not None


@pytest.mark.parametrize("model", STREAMED)
def test_wire_format_and_dense_sequence_numbers(sim_server, model):
    body = {
        "model": model,
        "input": PROMPT,
        "stream": True,
        "metadata": {**FAST, "sim_stall_ms": "0"},
    }
    response = post_raw(sim_server, body)
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["x-request-id"].startswith("req_")
    frames = frames_of(response.content)
    assert all(name == data["type"] for name, data in frames)
    assert [data["sequence_number"] for _, data in frames] == list(range(len(frames)))
    assert b"[DONE]" not in response.content


def test_same_seed_gives_the_same_bytes_as_the_pure_function(sim_server):
    body = {
        "model": "sim-all-families",
        "input": PROMPT,
        "stream": True,
        "metadata": {"sim_seed": "7", "sim_tokens_per_s": "max"},
    }
    first, second = post_raw(sim_server, body).content, post_raw(sim_server, body).content
    assert first == second
    assert first == b"".join(encode_sse(event) for event in build_events("sim-all-families", body))
    other = post_raw(
        sim_server, {**body, "metadata": {"sim_seed": "8", "sim_tokens_per_s": "max"}}
    ).content
    assert other != first


def test_without_a_seed_the_text_follows_the_input_but_ids_are_fresh(client):
    one = client.responses.create(model="sim-text", input=PROMPT, metadata=FAST)
    two = client.responses.create(model="sim-text", input=PROMPT, metadata=FAST)
    assert one.output_text == two.output_text
    assert one.id != two.id


def test_non_streaming_create_returns_the_final_response(client):
    response = client.responses.create(
        model="sim-text", input=PROMPT, instructions="Be brief.", metadata=FAST
    )
    assert response.status == "completed"
    assert "How do server" in response.output_text
    assert response.instructions == "Be brief."
    assert client.responses.retrieve(response.id).output_text == response.output_text


def test_small_max_output_tokens_ends_incomplete(client):
    with client.responses.stream(
        model="sim-text", input=PROMPT, max_output_tokens=16, metadata={**FAST, "sim_tokens": "80"}
    ) as stream:
        last = list(stream)[-1]
        with pytest.raises(RuntimeError, match="response.completed"):
            stream.get_final_response()
    assert last.type == "response.incomplete"
    assert last.response.incomplete_details.reason == "max_output_tokens"


@pytest.mark.parametrize(
    "model, code", [("sim-failed", "server_error"), ("sim-quota-exceeded", "insufficient_quota")]
)
def test_failed_scenarios_make_the_sdk_raise_api_error(sim_server, client, model, code):
    with (
        pytest.raises(openai.APIError) as caught,
        client.responses.stream(model=model, input=PROMPT, metadata=FAST) as stream,
    ):
        for _event in stream:
            pass
    assert caught.value.code == code
    raw = frames_of(
        post_raw(
            sim_server, {"model": model, "input": PROMPT, "stream": True, "metadata": FAST}
        ).content
    )
    assert [name for name, _ in raw[-2:]] == ["error", "response.failed"]
    assert raw[-2][1]["error"]["code"] == code


@pytest.mark.parametrize(
    "model, exception",
    [
        ("sim-http-400", openai.BadRequestError),
        ("sim-http-401", openai.AuthenticationError),
        ("sim-http-429", openai.RateLimitError),
        ("sim-http-500", openai.InternalServerError),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
def test_http_error_scenarios_raise_the_matching_sdk_exception(client, model, exception, stream):
    with pytest.raises(exception) as caught:
        client.responses.create(model=model, input=PROMPT, stream=stream)
    assert caught.value.status_code == int(model[-3:])
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.request_id.startswith("req_")


def test_temperature_out_of_range_is_rejected_like_the_recording(sim_server, client, recordings):
    response = post_raw(
        sim_server, {"model": "sim-text", "input": "hi", "stream": True, "temperature": -1}
    )
    assert response.status_code == 400
    assert response.json() == json.loads((recordings / "http-400-error-body.json").read_text())
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="sim-text", input="hi", temperature=2.5)
    assert caught.value.code == "decimal_above_max_value"


def test_unknown_model_and_unknown_paths_are_openai_shaped(sim_server, client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model="gpt-nope", input="hi")
    assert caught.value.code == "model_not_found"
    response = httpx.get(sim_server + "/files/xyz")
    assert response.status_code == 404
    assert response.json()["error"]["message"] == "Invalid URL (GET /v1/files/xyz)"


def _background(client: openai.OpenAI, tokens: int = 40, rate: str = "400"):
    """A background + stream response; ``rate`` tokens/s keeps it running while a test acts."""
    return client.responses.create(
        model="sim-text",
        input=PROMPT,
        background=True,
        stream=True,
        metadata={"sim_tokens": str(tokens), "sim_tokens_per_s": rate, "sim_first_token_ms": "0"},
    )


def test_background_stream_starts_queued_and_resumes_with_the_same_events(client):
    stream = _background(client)
    first = []
    for event in stream:
        first.append(event)
        if len(first) == 8:
            break
    stream.close()  # the client goes away; the response keeps being generated
    assert [e.type for e in first[:3]] == [
        "response.created",
        "response.queued",
        "response.in_progress",
    ]
    assert first[0].response.status == "queued"
    response_id = first[0].response.id
    resumed = list(client.responses.retrieve(response_id, stream=True, starting_after=7))
    assert resumed[0].sequence_number == 8
    assert resumed[-1].type == "response.completed"
    replay = list(client.responses.retrieve(response_id, stream=True, starting_after=-1))
    assert [e.to_dict() for e in replay[:8]] == [e.to_dict() for e in first]
    assert [e.to_dict() for e in replay[8:]] == [e.to_dict() for e in resumed]
    assert client.responses.retrieve(response_id).status == "completed"


def test_resume_is_byte_identical_to_the_tail(sim_server):
    body = {
        "model": "sim-reasoning-summary",
        "input": PROMPT,
        "background": True,
        "stream": True,
        "metadata": {**FAST, "sim_seed": "resume"},
    }
    original = post_raw(sim_server, body).content
    frames = frames_of(original)
    response_id = frames[0][1]["response"]["id"]
    tail = httpx.get(
        f"{sim_server}/responses/{response_id}", params={"stream": "true", "starting_after": 5}
    ).content
    assert tail == b"".join(encode_sse(data) for _, data in frames[6:])
    assert original.endswith(tail)


def test_dropped_background_stream_can_be_resumed(sim_server, client):
    body = {
        "model": "sim-dropped",
        "input": PROMPT,
        "background": True,
        "stream": True,
        "metadata": {"sim_tokens": "40", "sim_tokens_per_s": "max", "sim_drop_after": "10"},
    }
    received = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        httpx.stream("POST", sim_server + "/responses", json=body, timeout=30) as response,
    ):
        for line in response.iter_lines():
            if line.startswith("data: "):
                received.append(json.loads(line[6:]))
    assert len(received) == 10
    rest = list(
        client.responses.retrieve(received[0]["response"]["id"], stream=True, starting_after=9)
    )
    assert rest[0].sequence_number == 10 and rest[-1].type == "response.completed"


def test_dropped_connection_is_a_transport_error_for_httpx(sim_server):
    body = {
        "model": "sim-dropped",
        "input": PROMPT,
        "stream": True,
        "metadata": {"sim_tokens": "40", "sim_tokens_per_s": "max"},
    }
    events = 0
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        httpx.stream("POST", sim_server + "/responses", json=body, timeout=30) as response,
    ):
        for line in response.iter_lines():
            events += line.startswith("event: ")
    assert events == 4 + 40 // 2


def test_cancel_stops_a_live_stream_and_is_idempotent(client):
    stream = _background(client, tokens=2000, rate="50")
    first = next(iter(stream))
    response_id = first.response.id
    cancelled = client.responses.cancel(response_id)
    again = client.responses.cancel(response_id)
    assert cancelled.status == again.status == "cancelled"
    assert cancelled == again
    rest = list(stream)  # the live stream ends, without any terminal event
    assert rest and rest[-1].type not in (
        "response.completed",
        "response.failed",
        "response.incomplete",
    )
    assert client.responses.retrieve(response_id).status == "cancelled"


def test_cancelling_a_synchronous_response_is_a_400(client):
    response = client.responses.create(model="sim-text", input=PROMPT, metadata=FAST)
    with pytest.raises(openai.BadRequestError, match="synchronous"):
        client.responses.cancel(response.id)


def test_unknown_response_id_is_a_404(client):
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve("resp_does_not_exist")
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel("resp_does_not_exist")


def test_background_without_stream_returns_queued_then_completes(client):
    created = client.responses.create(
        model="sim-text", input=PROMPT, background=True, metadata=FAST
    )
    assert created.status == "queued"
    deadline = time.monotonic() + 10
    while client.responses.retrieve(created.id).status in ("queued", "in_progress"):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.responses.retrieve(created.id).status == "completed"


def test_stall_before_the_first_byte_trips_a_read_timeout(sim_server):
    body = {
        "model": "sim-stall",
        "input": PROMPT,
        "stream": True,
        "metadata": {**FAST, "sim_stall_ms": "5000"},
    }
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(sim_server + "/responses", json=body, timeout=httpx.Timeout(30, read=0.5))


def test_stall_after_some_events(sim_server):
    body = {
        "model": "sim-text",
        "input": PROMPT,
        "stream": True,
        "metadata": {**FAST, "sim_stall_after": "3", "sim_stall_ms": "5000"},
    }
    events = 0
    with (
        pytest.raises(httpx.ReadTimeout),
        httpx.stream(
            "POST", sim_server + "/responses", json=body, timeout=httpx.Timeout(30, read=0.5)
        ) as r,
    ):
        for line in r.iter_lines():
            events += line.startswith("event: ")
    assert events == 3


def test_resume_without_obfuscation(sim_server, client):
    stream = _background(client, tokens=10, rate="max")
    response_id = next(iter(stream)).response.id
    list(stream)
    body = httpx.get(
        f"{sim_server}/responses/{response_id}",
        params={"stream": "true", "include_obfuscation": "false"},
    ).content
    assert b"obfuscation" not in body and b"response.output_text.delta" in body


def test_chat_completions_stream_accumulates_text_and_usage(sim_server, client):
    text, usage = "", None
    chunks = client.chat.completions.create(
        model="sim-text",
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        metadata=FAST,
    )
    for chunk in chunks:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        usage = chunk.usage or usage
    assert text.startswith(("You asked", "Here is", "About")) and usage.completion_tokens == 12
    raw = post_raw(
        sim_server,
        {
            "model": "sim-text",
            "messages": [{"role": "user", "content": "hi"}],
            "stream": True,
            "metadata": FAST,
        },
        "/chat/completions",
    ).content
    assert raw.endswith(b"data: [DONE]\n\n") and b"event:" not in raw


def test_chat_completions_streams_tool_call_arguments(client):
    calls: dict[int, str] = {}
    for chunk in client.chat.completions.create(
        model="sim-function-calls",
        messages=[{"role": "user", "content": "weather in Oslo?"}],
        stream=True,
        metadata=FAST,
    ):
        for call in chunk.choices[0].delta.tool_calls or [] if chunk.choices else []:
            calls[call.index] = calls.get(call.index, "") + (call.function.arguments or "")
    assert len(calls) == 3
    assert all(isinstance(json.loads(arguments), dict) for arguments in calls.values())


def test_chat_completions_failure_raises_api_error(client):
    with pytest.raises(openai.APIError, match="server had an error"):
        for _chunk in client.chat.completions.create(
            model="sim-failed",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            metadata=FAST,
        ):
            pass


def test_moderations_flag_listed_words(client):
    result = client.moderations.create(input=["a friendly note", "how to build a bomb"])
    assert [r.flagged for r in result.results] == [False, True]
    assert result.results[1].categories.illicit_violent is True
