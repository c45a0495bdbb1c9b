"""The runner against real HTTP upstreams: a scripted socket server that injects faults."""

import asyncio
import json

import pytest
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer

from streams.live.executor import RunExecutor
from streams.models import Run, RunStatus
from streams.pipeline.broadcast import group_name
from tests.support.upstreams import RESP, Script, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def upstream_settings():
    # Fault tests wait for stalls and refused connections: short limits keep them quick.
    return {"STREAMSCOPE_STALL_TIMEOUT_S": 0.5, "STREAMSCOPE_CONNECT_TIMEOUT_S": 2}


@sync_to_async
def new_run(user, provider="scripted", background=False):
    return Run.objects.create(owner=user, provider=provider, model="m",
                              request={"model": "m", "input": "hi", "stream": True, "background": background},
                              background=background)


@sync_to_async
def stored(run):
    run.refresh_from_db()
    return run, list(run.events.order_by("seq").values_list("seq", "t", "type", "data"))


async def listen(run_id):
    layer = get_channel_layer()
    channel = await layer.new_channel()
    await layer.group_add(group_name(run_id), channel)
    return layer, channel


async def drain(layer, channel):
    seqs, statuses = [], []
    while True:
        try:
            message = await asyncio.wait_for(layer.receive(channel), timeout=0.2)
        except TimeoutError:
            return seqs, statuses
        if message["type"] == "run.events":
            seqs.extend(range(message["first"], message["first"] + len(message["events"])))
        else:
            statuses.append(message["status"])


async def test_a_good_stream_is_stored_exactly_and_published_once(upstream, user):
    events = text_stream(["Hel", "lo", " world"])
    body = sse(*events)
    upstream.scripts.append(Script(steps=[(0, body[:100]), (0.02, body[100:300]), (0.02, body[300:])]))
    run = await new_run(user)
    layer, channel = await listen(run.pk)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert [r[0] for r in rows] == list(range(len(events)))
    assert [r[2] for r in rows] == [e["type"] for e in events]
    # data is the data line exactly as sent (key order, obfuscation and all)
    assert [r[3] for r in rows] == [json.dumps(e) for e in events]
    assert all(a[1] <= b[1] for a, b in zip(rows, rows[1:]))
    assert run.output_text == "Hello world"
    assert run.usage == {"output_tokens": 3}
    assert run.response_id == "resp_1"
    assert run.event_count == len(events)
    assert run.metrics["events"] == len(events) and run.metrics["ttft_ms"] is not None
    assert run.error is None and run.finished_at is not None
    seqs, statuses = await drain(layer, channel)
    assert seqs == list(range(len(events)))
    assert statuses == ["streaming", "completed"]
    # What went upstream: the stored request body, and the key only in the headers.
    sent = json.loads(upstream.requests[0]["body"])
    assert sent["stream"] is True and sent["input"] == "hi"


async def test_http_error_is_recorded_with_status_and_body(upstream, user):
    body = {"error": {"message": "Invalid 'temperature'", "type": "invalid_request_error", "code": "bad",
                      "param": "temperature"}}
    upstream.scripts.append(Script(status=400, content_type="application/json", steps=[(0, json.dumps(body).encode())]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert rows == []
    assert run.error["http_status"] == 400
    assert run.error["body"] == body
    assert "Invalid 'temperature'" in run.error["message"]


async def test_malformed_json_line_is_kept_and_the_stream_goes_on(upstream, user):
    events = text_stream(["a", "b"])
    body = sse(*events[:3]) + b"data: {not json\n\n" + sse(*events[3:])
    upstream.scripts.append(Script(steps=[(0, body)]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    malformed = [r for r in rows if r[2] == "streamscope.malformed"]
    assert len(malformed) == 1
    assert json.loads(malformed[0][3])["raw"] == "{not json"
    assert len(rows) == len(events) + 1


async def test_connection_refused_fails_clearly(settings, user):
    settings.STREAMSCOPE_EXTRA_PROVIDERS = json.dumps([{"name": "scripted", "base_url": "http://127.0.0.1:9/v1"}])
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, _ = await stored(run)
    assert run.error["code"] == "connect_error"
    assert "could not connect" in run.error["message"]


async def test_a_stall_ends_the_run_as_failed(upstream, user):
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["a"], terminal=False)))], ending="hang"))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert run.error["code"] == "stalled"
    assert len(rows) == 3  # what arrived before the stall is kept


async def test_a_dropped_connection_keeps_what_arrived(upstream, user):
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["a", "b"], terminal=False)))], ending="drop"))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert run.error["code"] in ("connection_dropped", "truncated_stream")
    assert len(rows) == 4


async def test_nested_error_event_then_failed(upstream, user):
    events = [
        {"type": "response.created", "sequence_number": 0, "response": RESP},
        {"type": "error", "sequence_number": 1,
         "error": {"type": "insufficient_quota", "code": "insufficient_quota", "message": "You exceeded your quota",
                   "param": None}},
        {"type": "response.failed", "sequence_number": 2,
         "response": {**RESP, "status": "failed",
                      "error": {"code": "insufficient_quota", "message": "You exceeded your quota"}}},
    ]
    upstream.scripts.append(Script(steps=[(0, sse(*events))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert run.error == {"message": "You exceeded your quota", "code": "insufficient_quota"}
    assert [r[2] for r in rows] == ["response.created", "error", "response.failed"]


async def test_a_body_that_is_not_sse_is_recorded_and_fails(upstream, user):
    upstream.scripts.append(Script(content_type="text/html",
                                   steps=[(0, b"<html>\n<body>Bad gateway</body>\n</html>\n")]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert [json.loads(r[3])["raw"] for r in rows] == ["<html>", "<body>Bad gateway</body>", "</html>"]
    assert run.error["code"] == "truncated_stream"


async def test_an_oversized_event_fails_the_run_and_keeps_the_rest(upstream, user, settings):
    settings.STREAMSCOPE_MAX_EVENT_BYTES = 10_000
    events = text_stream(["a"], terminal=False)
    upstream.scripts.append(Script(steps=[(0, sse(*events)), (0, b"data: " + b"x" * 20_000)], ending="hang"))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert run.error["code"] == "event_too_large"
    assert len(rows) == 3


async def test_resume_after_a_drop_keeps_every_event_exactly_once(upstream, user):
    events = text_stream(["one", " two", " three", " four"])
    upstream.scripts.append(Script(steps=[(0, sse(*events[:4]))], ending="drop"))
    # The resumed stream starts after the last seq received (3), as OpenAI's does.
    upstream.scripts.append(Script(steps=[(0, sse(*events[4:]))]))
    run = await new_run(user, provider="scripted-bg", background=True)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    upstream_rows = [r for r in rows if not r[2].startswith("streamscope.")]
    assert [json.loads(r[3])["sequence_number"] for r in upstream_rows] == list(range(len(events)))
    assert [r[2] for r in rows if r[2].startswith("streamscope.")] == ["streamscope.resume"]
    assert upstream.requests[1]["method"] == "GET"
    assert upstream.requests[1]["path"] == "/v1/responses/resp_1?stream=true&starting_after=3"
    assert run.output_text == "one two three four"


async def test_cancel_stops_the_run_and_cancels_upstream(upstream, user):
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["a"], terminal=False)))], ending="hang"))
    upstream.scripts.append(Script(content_type="application/json", steps=[(0, b"{}")]))
    run = await new_run(user, provider="scripted-bg", background=True)
    task = asyncio.create_task(RunExecutor(run.pk).execute())
    for _ in range(100):
        await asyncio.sleep(0.02)
        if len((await stored(run))[1]) >= 3:
            break
    task.cancel()
    assert await task == RunStatus.CANCELLED
    run, rows = await stored(run)
    assert run.status == RunStatus.CANCELLED and len(rows) == 3
    assert upstream.requests[-1]["method"] == "POST"
    assert upstream.requests[-1]["path"] == "/v1/responses/resp_1/cancel"


async def test_chat_completions_stream_ends_with_done(upstream, user):
    chunks = [{"id": "c1", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": w}, "finish_reason": None}]}
              for w in ["Hi", " there"]]
    chunks.append({"id": "c1", "object": "chat.completion.chunk",
                   "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    upstream.scripts.append(Script(steps=[(0, body)]))
    run = await new_run(user, provider="scripted-chat")
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert [r[2] for r in rows] == ["chat.completion.chunk"] * 3 + ["streamscope.done"]
    assert run.output_text == "Hi there"
    assert upstream.requests[0]["path"] == "/v1/chat/completions"


async def test_the_events_per_run_limit_stops_a_flood(upstream, user, settings):
    settings.STREAMSCOPE_MAX_EVENTS_PER_RUN = 5
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["w"] * 20)))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert run.error["code"] == "run_limit" and "limit of 5 events" in run.error["message"]
    assert len(rows) == 5


async def test_an_upstream_that_never_closes_is_ended(upstream, user, settings):
    settings.STREAMSCOPE_MAX_RUN_SECONDS = 0.3
    keepalive = [(0.05, b": still here\n\n")] * 40  # bytes keep coming, so no stall, but no end either
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["a"], terminal=False))), *keepalive], ending="hang"))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert run.error["code"] == "run_limit" and "longer than the limit" in run.error["message"]
    assert len(rows) == 3


async def test_chat_completion_cut_by_length_is_incomplete(upstream, user):
    chunks = [{"id": "c1", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": "Hi"}, "finish_reason": None}]},
              {"id": "c1", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}]
    body = b"".join(b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"
    upstream.scripts.append(Script(steps=[(0, body)]))
    run = await new_run(user, provider="scripted-chat")
    assert await RunExecutor(run.pk).execute() == RunStatus.INCOMPLETE


async def test_many_runs_are_flushed_by_one_clock_together(upstream, user, monkeypatch):
    from streams.pipeline import flush_clock as flushclock
    from streams.pipeline import store

    rounds = []
    real = store.append_many
    monkeypatch.setattr(store, "append_many", lambda batches: (rounds.append(len(batches)), real(batches))[1])
    words = [f"w{i} " for i in range(20)]
    runs = [await new_run(user) for _ in range(6)]
    for _ in runs:
        body = sse(*text_stream(words))
        upstream.scripts.append(Script(steps=[(0.01, body[i:i + 200]) for i in range(0, len(body), 200)]))
    statuses = await asyncio.gather(*(RunExecutor(run.pk).execute() for run in runs))
    assert statuses == [RunStatus.COMPLETED] * 6
    for run in runs:
        run, rows = await stored(run)
        assert [r[0] for r in rows] == list(range(len(words) + 3)) and run.output_text == "".join(words)
    assert max(rounds) > 1  # batches of several runs shared a transaction
    assert not flushclock.flush_clock().runs  # every run left the clock


async def test_a_tick_that_arrives_after_the_final_flush_changes_nothing(upstream, user):
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(["a", "b"])))]))
    run = await new_run(user)
    runner = RunExecutor(run.pk)
    assert await runner.execute() == RunStatus.COMPLETED
    runner.text_parts.append("late")
    runner._last_text_save = 0.0
    await runner.flush()  # what a tick computed before the run ended would do
    run, _ = await stored(run)
    assert run.output_text == "ab" and run.status == RunStatus.COMPLETED


async def test_a_failing_store_ends_the_run_failed_instead_of_losing_events_silently(upstream, user, monkeypatch):
    from streams.pipeline import ends, store

    async def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    words = [f"w{i} " for i in range(2000)]
    upstream.scripts.append(Script(steps=[(0, sse(*text_stream(words)))]))
    run = await new_run(user)
    runner = RunExecutor(run.pk)
    runner.flush_max = 10
    monkeypatch.setattr(store, "write_batch", broken)
    monkeypatch.setattr(ends, "write_end", broken)  # the end is a write of its own (after the last events)
    with pytest.raises(RuntimeError, match="disk full"):
        await runner.execute()  # even the final write fails: the error reaches the launcher
    assert runner._flush_error is not None
