"""Exports (SSE, JSONL), their round trips through the importer, and both management commands."""

from __future__ import annotations

import json
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from streams.history.export import export_jsonl, export_sse, sse_frame
from streams.history.importer import import_stream
from streams.models import Event, Run

RECORDINGS_WITH_EVENT_LINES = [
    "background-resume-starting-after-0.sse",
    "background-stream.sse",
    "error-event-then-failed.sse",
    "file-search-with-citation.sse",
    "function-call-2025-03-no-sequence-numbers.sse",
    "incomplete-max-output-tokens.sse",
    "reasoning-summary-then-text.sse",
    "text-with-logprobs.sse",
    "web-search-with-reasoning.sse",
]
RUN_FIELDS = (
    "model",
    "request",
    "status",
    "output_text",
    "usage",
    "metrics",
    "error",
    "response_id",
    "event_count",
    "started_at",
    "finished_at",
)


def data_lines(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def events_of(run: Run) -> list[tuple[int, float, str, str]]:
    return list(run.events.order_by("seq").values_list("seq", "t", "type", "data"))


@pytest.mark.django_db
@pytest.mark.parametrize("name", RECORDINGS_WITH_EVENT_LINES)
def test_sse_export_reproduces_openai_recordings_byte_for_byte(recordings, user, name):
    raw = (recordings / name).read_text()
    run = import_stream(raw.encode(), owner=user, filename=name)
    assert "".join(export_sse(run)) == raw


@pytest.mark.django_db
def test_sse_export_of_data_only_stream_keeps_payloads_and_done(recordings, user):
    raw = (recordings / "openrouter-reasoning-text-and-done-marker.sse").read_text()
    run = import_stream(raw.encode(), owner=user)
    exported = "".join(export_sse(run))
    assert data_lines(exported) == data_lines(raw)
    assert exported.endswith("data: [DONE]\n\n")
    assert "OPENROUTER PROCESSING" not in exported  # comments are not data


@pytest.mark.django_db
def test_sse_export_gives_back_malformed_input(user):
    content = (
        b'data: {"type":"response.created","response":{"id":"r"}}\n\n'
        b"event: oops\ndata: {not json\n\n"
        b"stray line\n\n"
        b'data: {"object":"chat.completion.chunk","choices":[]}\n\n'
        b'data: {"no_type":true}\n\n'
    )
    run = import_stream(content, owner=user)
    exported = "".join(export_sse(run))
    assert exported == (
        'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
        "event: oops\ndata: {not json\n\n"
        "stray line\n\n"
        'data: {"object":"chat.completion.chunk","choices":[]}\n\n'
        'data: {"no_type":true}\n\n'
    )
    again = import_stream(exported.encode(), owner=user)
    assert [e[2:] for e in events_of(again)] == [e[2:] for e in events_of(run)]


def test_sse_frames_of_runner_malformed_records():
    # streams/live/executor.py marks stray lines with where="line" and bad data with where="data".
    line = json.dumps({"raw": "<html>", "error": "line is not an SSE field", "where": "line"})
    bad = json.dumps({"raw": "{x", "error": "invalid JSON in data line: ...", "event": "e", "where": "data"})
    assert sse_frame("streamscope.malformed", line) == "<html>\n\n"
    assert sse_frame("streamscope.malformed", bad) == "event: e\ndata: {x\n\n"


def test_sse_frames():
    assert sse_frame("response.created", '{"a":1}') == 'event: response.created\ndata: {"a":1}\n\n'
    assert sse_frame("x", "line1\nline2") == "event: x\ndata: line1\ndata: line2\n\n"
    assert sse_frame("streamscope.done", '{"raw":"[DONE]"}') == "data: [DONE]\n\n"
    assert sse_frame("streamscope.stall_warning", "{}") == ""  # our markers are not wire data


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name",
    [
        "reasoning-summary-then-text.sse",
        "error-event-then-failed.sse",
        "openrouter-reasoning-text-and-done-marker.sse",
        "http-400-error-body.json",
    ],
)
def test_jsonl_round_trip_of_imported_runs(recordings, user, name):
    first = import_stream((recordings / name).read_bytes(), owner=user, filename=name)
    text = "".join(export_jsonl(first))
    header = json.loads(text.splitlines()[0])
    assert header["streamscope"] == 1 and header["run"]["id"] == first.pk
    second = import_stream(text.encode(), owner=user, filename="copy.jsonl")
    first.refresh_from_db()
    second.refresh_from_db()
    assert events_of(second) == events_of(first)
    for field in RUN_FIELDS:
        assert getattr(second, field) == getattr(first, field), field
    assert second.source_name == "copy.jsonl" and second.imported


@pytest.mark.django_db
def test_jsonl_round_trip_of_a_live_run(user):
    """A run as the runner stores it: real timings, its own metrics, a status no event gives."""
    run = Run.objects.create(
        owner=user,
        provider="simulator",
        model="sim-echo",
        status="cancelled",
        request={"model": "sim-echo", "input": "héllo", "stream": True},
        output_text="hé",
        usage=None,
        response_id="resp_sim_1",
        metrics={"ttfe_ms": 12.5, "ttft_ms": 30.1, "events": 3, "bytes": 420, "timed": True},
        error={"message": "cancelled by alice", "code": "cancelled"},
        event_count=3,
    )
    payloads = [
        {"type": "response.created", "sequence_number": 0, "response": {"id": "resp_sim_1"}},
        {
            "type": "response.output_text.delta",
            "sequence_number": 1,
            "output_index": 0,
            "content_index": 0,
            "item_id": "m",
            "delta": "hé",
            "obfuscation": "Zx",
        },
        {"type": "response.future_thing", "sequence_number": 2},
    ]
    Event.objects.bulk_create(
        Event(run=run, seq=i, t=12.5 + i * 17.25, type=p["type"], data=json.dumps(p))
        for i, p in enumerate(payloads)
    )
    copy = import_stream("".join(export_jsonl(run)).encode(), owner=user)
    assert events_of(copy) == events_of(run)
    for field in (
        "model",
        "request",
        "status",
        "output_text",
        "usage",
        "metrics",
        "error",
        "response_id",
        "event_count",
    ):
        assert getattr(copy, field) == getattr(run, field), field
    assert copy.input_text == "héllo"


@pytest.mark.django_db
def test_jsonl_with_a_broken_record_keeps_it(user):
    header = json.dumps({"streamscope": 1, "run": {"model": "m", "status": "streaming"}})
    good = json.dumps(
        {"seq": 0, "t": 5.0, "type": "response.created", "data": '{"type":"response.created"}'}
    )
    content = f'{header}\n{good}\nnot json at all\n{{"seq": 1}}\n'.encode()
    run = import_stream(content, owner=user)
    types = [e.type for e in run.events.order_by("seq")]
    assert types == ["response.created", "streamscope.malformed", "streamscope.malformed"]
    assert run.status == "interrupted"  # exported mid-stream: nothing streams any more
    assert run.events.get(seq=0).t == 5.0
    assert run.metrics["timed"] is True and run.metrics["ttfe_ms"] == 5.0


@pytest.mark.django_db
def test_export_streams_large_runs_in_order(user):
    run = Run.objects.create(owner=user, provider="simulator", model="m", status="completed")
    Event.objects.bulk_create(
        (
            Event(
                run=run,
                seq=i,
                t=float(i),
                type="response.output_text.delta",
                data=json.dumps({"type": "response.output_text.delta", "delta": str(i)}),
            )
            for i in range(5000)
        ),
        batch_size=1000,
    )
    pieces = export_sse(run)
    assert not isinstance(pieces, list)  # a generator, consumed lazily
    deltas = [json.loads(d)["delta"] for d in data_lines("".join(pieces))]
    assert deltas == [str(i) for i in range(5000)]
    records = list(export_jsonl(run))
    assert len(records) == 5001
    assert [json.loads(r)["seq"] for r in records[1:]] == list(range(5000))


# -- management commands -------------------------------------------------------------------------


@pytest.mark.django_db
def test_import_command_prints_the_id_last(recordings, django_user_model):
    admin = django_user_model.objects.create_superuser("root", password="x")
    out = StringIO()
    call_command("import_stream", str(recordings / "text-with-logprobs.sse"), stdout=out)
    run = Run.objects.get()
    assert out.getvalue().strip().splitlines()[-1] == str(run.pk)
    assert run.owner == admin and run.source_name == "text-with-logprobs.sse"
    assert "format: sse" in out.getvalue()


@pytest.mark.django_db
def test_import_command_with_user_and_errors(recordings, user, tmp_path):
    out = StringIO()
    call_command(
        "import_stream", str(recordings / "background-stream.sse"), user="alice", stdout=out
    )
    assert Run.objects.get().owner == user

    with pytest.raises(CommandError, match="pass --user USERNAME"):
        call_command("import_stream", str(recordings / "background-stream.sse"), stdout=StringIO())
    with pytest.raises(CommandError, match="no user named 'nobody'"):
        call_command("import_stream", str(recordings / "background-stream.sse"), user="nobody")
    with pytest.raises(CommandError, match="cannot read"):
        call_command("import_stream", str(tmp_path / "missing.sse"), user="alice")
    empty = tmp_path / "empty.sse"
    empty.write_bytes(b"")
    with pytest.raises(CommandError, match="cannot import .*the file is empty"):
        call_command("import_stream", str(empty), user="alice")
    assert Run.objects.count() == 1


@pytest.mark.django_db
def test_import_command_refuses_big_files_before_reading(user, tmp_path, settings):
    settings.STREAMSCOPE_MAX_IMPORT_BYTES = 10
    big = tmp_path / "big.sse"
    big.write_bytes(b"data: {}\n\n" * 5)
    with pytest.raises(CommandError, match="import limit is 10 bytes"):
        call_command("import_stream", str(big), user="alice")


@pytest.mark.django_db
def test_export_command(recordings, user):
    raw = (recordings / "function-call-2025-03-no-sequence-numbers.sse").read_text()
    run = import_stream(raw.encode(), owner=user)
    out = StringIO()
    call_command("export_run", str(run.pk), format="sse", stdout=out)
    assert out.getvalue() == raw

    out = StringIO()
    call_command("export_run", str(run.pk), "--format", "jsonl", stdout=out)
    lines = out.getvalue().splitlines()
    assert json.loads(lines[0])["run"]["status"] == "completed"
    assert [json.loads(line)["data"] for line in lines[1:]] == data_lines(raw)

    with pytest.raises(CommandError, match="no run with id 999999"):
        call_command("export_run", "999999", format="sse")
