"""A NUL character from the upstream: PostgreSQL keeps none in text or JSON columns, so what the
run row and its events keep must not hold one, or the writes fail and the run's record with them."""

import json

import pytest
from asgiref.sync import sync_to_async

from streams.live.executor import RunExecutor
from streams.models import ModerationRule, Run, RunFlag, RunStatus
from tests.support.upstreams import RESP, Script, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


@sync_to_async
def new_run(user):
    return Run.objects.create(owner=user, provider="scripted", model="m",
                              request={"model": "m", "input": "hi", "stream": True})


@sync_to_async
def stored(run):
    run.refresh_from_db()
    return run, list(run.events.order_by("seq").values_list("type", "data"))


async def test_nul_in_output_text_is_stored_as_a_replacement_character(upstream, user):
    events = text_stream(["a\x00b", " c"])
    upstream.scripts.append(Script(steps=[(0, sse(*events))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert run.output_text == "a\ufffdb c"
    assert len(rows) == len(events)
    assert json.loads(rows[2][1])["delta"] == "a\x00b"  # the event keeps the upstream's exact text


async def test_a_raw_nul_byte_in_a_data_line_is_kept_readable(upstream, user):
    events = text_stream(["x"])
    body = sse(*events[:2]) + b"data: {\"type\": \"weird\x00\"}\n\n" + sse(*events[2:])
    upstream.scripts.append(Script(steps=[(0, body)]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert len(rows) == len(events) + 1
    assert all("\x00" not in data and "\x00" not in kind for kind, data in rows)
    assert "weird" in rows[2][1]


async def test_nul_in_an_upstream_error_is_stored(upstream, user):
    error = {"type": "error", "sequence_number": 2, "code": "server_error", "message": "bad\x00thing", "param": None}
    failed = {**RESP, "status": "failed", "error": {"code": "server_error", "message": "bad\x00thing"}}
    body = sse(*text_stream([], terminal=False), error,
               {"type": "response.failed", "sequence_number": 3, "response": failed})
    upstream.scripts.append(Script(steps=[(0, body)]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.FAILED
    run, rows = await stored(run)
    assert "\x00" not in json.dumps(run.error, ensure_ascii=False) and "bad" in json.dumps(run.error)
    assert len(rows) == 4


async def test_nul_in_an_event_name_is_stored_readable(upstream, user):
    events = text_stream(["x"])
    body = sse(*events[:2]) + b"event: odd\x00name\ndata: {}\n\n" + sse(*events[2:])
    upstream.scripts.append(Script(steps=[(0, body)]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert rows[2][0] == "odd\ufffdname"


async def test_the_row_written_while_streaming_keeps_only_storable_text(upstream, user):
    # The row is rewritten about once a second while the run streams: its output text is cleaned
    # then too, not only at the end (a lone surrogate cannot be encoded; PostgreSQL refuses NUL).
    events = text_stream(["a\ud800", "b\x00", "c"])
    body = sse(*events[:4])
    rest = sse(*events[4:])
    upstream.scripts.append(Script(steps=[(0, body), (1.3, rest)]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert run.output_text == "a\ufffdb\ufffdc" and len(rows) == len(events)


async def test_a_flag_keeps_only_storable_text_around_its_match(upstream, user):
    await sync_to_async(ModerationRule.objects.create)(name="fruit", patterns="fruit", kind="keywords",
                                                       scope="output_text", action="flag")
    events = text_stream(["\ud800 a\x00 ", "fruit", " b\x00"])
    upstream.scripts.append(Script(steps=[(0, sse(*events))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    flag = await sync_to_async(RunFlag.objects.get)(run=run)
    assert (flag.context_before, flag.matched_text, flag.start) == ("\ufffd a\ufffd ", "fruit", 5)


@pytest.mark.parametrize("bad_id", ["resp_\ud800", "resp_\x00", "r" * 201])
async def test_a_response_id_no_row_can_keep_is_not_taken_and_the_run_goes_on(upstream, user, bad_id):
    events = text_stream(["a", "b"])
    for event in events:
        if "response" in event:
            event["response"] = {**event["response"], "id": bad_id}
    upstream.scripts.append(Script(steps=[(0, sse(*events))]))
    run = await new_run(user)
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run, rows = await stored(run)
    assert (run.response_id, run.output_text, len(rows)) == ("", "ab", len(events))
