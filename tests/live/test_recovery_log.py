"""Recovery after a process died between writes: the round's events and its rows, a run's last events
and its end (the second review of 2026-11-30's eighth session; each failed before its fix)."""
from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from django.db.models import F

from streams.live import recovery
from streams.live.recorder import RunRecorder
from streams.models import Event, Run, RunStatus
from streams.pipeline import flush_clock as flushclock
from streams.pipeline.flush_clock import FlushClock
from tests.support.factories import make_run
from tests.support.frames import frame

pytestmark = pytest.mark.django_db(transaction=True)


def store_rows(run, rows):
    Event.objects.bulk_create(Event(run=run, seq=seq, t=float(seq), type=event_type,
                                    data=data if isinstance(data, str) else json.dumps(data))
                              for seq, (event_type, data) in enumerate(rows))


class Launches:
    def __init__(self):
        self.calls = []

    async def launch(self, run_id, resume=False):
        self.calls.append((run_id, resume))


async def test_response_id_known_only_to_the_log_after_the_rows_write_is_lost_run_is_resumed(user, monkeypatch):
    """8e3602c: the response id goes on the row in the round's second write. Events stored, rows not
    (process died in between; here: the rows' write failed and the process died before the next):
    the row has neither response id nor cursor, catch_up_row restores the cursor only, so a
    background run the upstream still has is marked interrupted instead of resumed."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, background=True,
                                        worker="gone-host:1")
    recorder = RunRecorder(run.pk)
    real = flushclock.store.write_round

    async def write_round(batches):
        if all(not rows for _, rows, _ in batches):  # the rows' write: the process "dies" here
            return [RuntimeError("process died between the two writes")] * len(batches)
        return await real(batches)

    monkeypatch.setattr(flushclock.store, "write_round", write_round)
    recorder.accept_frame(frame({"type": "response.created", "sequence_number": 0,
                                 "response": {"id": "resp_abc", "status": "in_progress"}}), 0.0)
    recorder.accept_frame(frame({"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi"}), 1.0)
    clock = FlushClock()
    clock.runs.add(recorder)
    await clock.tick()
    row = await Run.objects.aget(pk=run.pk)
    stored = [e async for e in Event.objects.filter(run_id=run.pk).order_by("seq").values_list("type", flat=True)]
    assert stored == ["response.created", "response.output_text.delta"]
    assert (row.response_id, row.last_upstream_seq) == ("", None)  # the events are, the row is not

    launches = Launches()
    monkeypatch.setattr(recovery, "get_launcher", lambda: launches)
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    after = await Run.objects.aget(pk=run.pk)
    assert launches.calls == [(run.pk, True)], f"not resumed: status {after.status}, error {after.error}"


async def test_responses_run_with_done_marker_but_no_terminal_is_not_completed(user, monkeypatch):
    """0e949fc: stored_ending judges any log with [DONE] as a chat stream: a Responses stream cut before
    its terminal event (but with a [DONE]) is ended completed, where the live run ends it failed
    (truncated_stream)."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    rows = [("response.created", {"type": "response.created", "sequence_number": 0,
                                  "response": {"id": "resp_x", "status": "in_progress"}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "delta": "hi"}),
            ("streamscope.done", '{"raw":"[DONE]"}')]
    await sync_to_async(store_rows)(run, rows)
    live = RunRecorder(run.pk)
    live.accept_frame(frame(rows[0][1]), 0.0)
    live.accept_frame(frame(rows[1][1]), 1.0)
    live.accept_frame(frame("[DONE]"), 2.0)
    live_status, _ = live._outcome("responses")
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    ended = await Run.objects.aget(pk=run.pk)
    assert live_status == RunStatus.FAILED  # live: truncated_stream
    assert ended.status == RunStatus.INTERRUPTED, ended.status  # not completed: the log holds no end


async def test_a_deeply_nested_stored_event_does_not_strand_the_run(user, monkeypatch):
    """0e949fc: replay_stored now json.loads every stored event (it used to decode text deltas only);
    live, orjson accepted this payload (up to 1024 levels) and stored it as it came; json.loads
    raises RecursionError, which replay_stored does not catch."""

    from streams.live.recorder import WORKER_NAME
    from streams.protocol import fastjson

    deep = '{"type":"response.output_item.added","sequence_number":1,"item":' + "[" * 1000 + "]" * 1000 + "}"
    payload = fastjson.decode(deep)  # what the live recorder does with it: accepted
    assert isinstance(payload, dict)
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(store_rows)(run, [
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 0, "delta": "hi"}),
        ("response.output_item.added", deep)])
    # the row counted both (its last write came after them): catch_up_row reads nothing
    await Run.objects.filter(pk=run.pk).aupdate(event_count=2, last_upstream_seq=1)
    from streams.live import recorder as recorder_module
    replayed = []
    real_replay = recorder_module.store.iter_event_rows

    def iter_rows(run_id, *a, **k):
        replayed.append(run_id)
        return real_replay(run_id, *a, **k)

    monkeypatch.setattr(recorder_module.store, "iter_event_rows", iter_rows)
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    row = await Run.objects.aget(pk=run.pk)
    # claimed by this process, never ended; this process's sweeps skip runs it holds
    assert row.status != RunStatus.STREAMING, (row.status, row.worker, row.worker == WORKER_NAME)


async def test_a_dashboard_stop_between_claim_and_end_from_log_stands(user, monkeypatch):
    """0e949fc: end_from_log's UPDATE is unconditional (as mark_interrupted's): a Stop in the dashboard
    that ends the orphan (launcher.mark_orphan_cancelled, status filter only) after the sweep claimed
    it is overwritten, and viewers get 'cancelled' then 'completed'."""
    from streams.live.launcher import mark_orphan_cancelled

    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    response = {"id": "resp_s", "status": "completed", "output": []}
    await sync_to_async(store_rows)(run, [
        ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 0, "delta": "hi"}),
        ("response.completed", {"type": "response.completed", "sequence_number": 1, "response": response})])
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    real = recovery.end_from_log

    def stop_then_end(run):
        mark_orphan_cancelled(run.pk)  # the dashboard's Stop, in between
        return real(run)

    monkeypatch.setattr(recovery, "end_from_log", stop_then_end)
    await recovery.recover_once()
    ended = await Run.objects.aget(pk=run.pk)
    assert ended.status == RunStatus.CANCELLED, ended.status


async def test_a_run_a_stop_rule_stopped_on_its_terminal_event_is_not_ended_completed(user, monkeypatch):
    """0e949fc: a keyword at the very end of the output is held back until the terminal event
    (LiveModerator.observe -> finish), so a stop rule raises ModerationStopped on response.completed,
    after it was buffered: the run ends cancelled (moderation_stopped) with the terminal event in its
    log, and its flag is committed only after its end. A crash between the two: recovery ends it
    completed, unflagged."""
    from streams.models import ModerationRule
    from streams.review.moderation import ModerationStopped

    await sync_to_async(ModerationRule.objects.create)(name="stop secret", patterns="secret", kind="keywords",
                                                      scope="output_text", action="stop")
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    response = {"id": "resp_m", "status": "completed", "output": []}
    frames = [{"type": "response.output_text.delta", "sequence_number": 0, "delta": "the secret"},
              {"type": "response.completed", "sequence_number": 1, "response": response}]
    live = RunRecorder(run.pk)
    await live.moderator.load(run)
    stopped_at = None
    for t, payload in enumerate(frames):
        try:
            live.accept_frame(frame(payload), float(t))
        except ModerationStopped:
            stopped_at = payload["type"]
            break
    assert stopped_at == "response.completed" and [r[3] for r in live.buffer] == [f["type"] for f in frames]
    # what _finish stores before writing the end: the whole buffer; the process dies here
    await sync_to_async(store_rows)(run, [(r[3], r[4]) for r in live.buffer])
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    ended = await Run.objects.aget(pk=run.pk)
    # Not completed: with a stop rule on the output the log cannot say how the run ended.
    assert ended.status == RunStatus.INTERRUPTED, (ended.status, ended.error)


def completed_log(response_id: str = "resp_m") -> list:
    usage = {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    return [("response.created", {"type": "response.created", "sequence_number": 0,
                                  "response": {"id": response_id, "status": "in_progress"}}),
            ("response.output_text.delta", {"type": "response.output_text.delta", "sequence_number": 1, "delta": "he"}),
            ("response.output_text.delta",
             {"type": "response.output_text.delta", "sequence_number": 2, "delta": "llo"}),
            ("response.completed", {"type": "response.completed", "sequence_number": 3,
                                    "response": {"id": response_id, "status": "completed", "usage": usage}})]


async def test_a_run_ended_from_its_log_gets_its_usage_and_metrics(user, monkeypatch):
    """The eighth session left it: a run whose process died after its last events were stored was
    ended from them without usage or metrics (the row keeps neither until a run's end)."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(store_rows)(run, completed_log())  # t = 0, 1, 2, 3 ms
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    after = await Run.objects.aget(pk=run.pk)
    assert (after.status, after.output_text) == (RunStatus.COMPLETED, "hello")
    assert after.usage == {"input_tokens": 5, "output_tokens": 2, "total_tokens": 7}
    assert after.metrics["events"] == 4 and after.metrics["output_tokens"] == 2
    assert (after.metrics["ttfe_ms"], after.metrics["ttfd_ms"], after.metrics["duration_ms"]) == (0.0, 1.0, 3.0)
    assert after.ttft_ms == 1.0  # the indexed copy the runs list sorts on


async def test_an_interrupted_run_gets_the_metrics_of_what_was_stored(user, monkeypatch):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(store_rows)(run, completed_log()[:3])  # cut before its end
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    after = await Run.objects.aget(pk=run.pk)
    assert (after.status, after.output_text, after.error["code"]) == (RunStatus.INTERRUPTED, "hello", "interrupted")
    assert after.metrics["events"] == 3 and after.metrics["ttfd_ms"] == 1.0


@pytest.mark.parametrize(("body", "status", "text", "usage"), [
    ({"id": "resp_w", "object": "response", "status": "completed", "usage": {"output_tokens": 1},
      "output": [{"type": "message", "content": [{"type": "output_text", "text": "whole"}]}]},
     RunStatus.COMPLETED, "whole", {"output_tokens": 1}),
    ({"id": "chatcmpl-1", "object": "chat.completion", "usage": {"completion_tokens": 3},
      "choices": [{"message": {"content": "cut"}, "finish_reason": "length"}]},
     RunStatus.INCOMPLETE, "cut", {"completion_tokens": 3}),
    ({"raw": "<html>", "error": "not a JSON object"}, RunStatus.FAILED, "", None),
], ids=["response", "chat", "not-json"])
async def test_a_gateway_run_whose_whole_answer_was_stored_ends_as_it_says(user, monkeypatch, body, status, text,
                                                                          usage):
    """The eighth session left it: a non-streamed answer (one streamscope.response_body event) was not
    read by the replay, so a gateway run whose process died after storing it was marked interrupted."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1", source="gateway")
    await sync_to_async(store_rows)(run, [("streamscope.response_body", body)])
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    after = await Run.objects.aget(pk=run.pk)
    assert (after.status, after.output_text, after.usage) == (status, text, usage)
    assert after.metrics["events"] == 1


async def test_an_interrupted_orphan_s_log_is_read_once(user, monkeypatch):
    """Ending it from its log found no end, then marking it interrupted read the whole log again."""
    from streams.live import recorder as recorder_module

    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(store_rows)(run, completed_log()[:3])
    reads = []
    real = recorder_module.replay_stored
    monkeypatch.setattr(recorder_module, "replay_stored", lambda run_id: reads.append(run_id) or real(run_id))
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    assert reads == [run.pk]
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.INTERRUPTED


async def test_a_run_of_this_process_whose_end_could_not_be_written_is_ended_from_its_log(user, monkeypatch):
    """Older than the eighth session: a run whose end's write failed (twice) stayed streaming until the
    process restarted (other processes take over a live process's run only when it is silent for long;
    in one process, nothing did). Such a run is taken once silent for STREAMSCOPE_STALE_AFTER_S; any
    other run of this process only after six times that (here: 15 s against 60)."""
    from datetime import timedelta

    from django.utils import timezone

    from streams.live import recorder as recorder_module
    from streams.live.executor import WORKER_NAME
    from streams.pipeline.flush_clock import flush_clock

    long_ago = timezone.now() - timedelta(minutes=5)
    dropped, held, beating, waiting = [
        await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker=WORKER_NAME) for _ in range(4)]
    for run in (dropped, held, beating, waiting):
        await sync_to_async(store_rows)(run, completed_log())
    await Run.objects.filter(pk__in=[dropped.pk, held.pk, waiting.pk]).aupdate(heartbeat_at=long_ago)
    await Run.objects.filter(pk=beating.pk).aupdate(heartbeat_at=timezone.now())
    await Run.objects.filter(pk=waiting.pk).aupdate(heartbeat_at=timezone.now() - timedelta(seconds=15))
    recorder_module.unended.update({dropped.pk, held.pk, beating.pk, 10**9})  # the last: no such run any more

    class Held:  # a recorder of this process's, registered with its loop's flush clock
        run_id = held.pk

        def flush_due(self, now):
            return False

    clock = flush_clock()
    clock.runs.add(Held())  # not register(): no clock task for a recorder that never flushes
    try:
        taken = await recovery.recover_once()
        unended_after = set(recorder_module.unended)
    finally:
        clock.runs.clear()
        recorder_module.unended.clear()
    assert taken == [dropped.pk]
    statuses = {run.pk: run.status async for run in Run.objects.filter(pk__in=[dropped.pk, held.pk, beating.pk,
                                                                                 waiting.pk])}
    assert statuses == {dropped.pk: RunStatus.COMPLETED, held.pk: RunStatus.STREAMING,
                        beating.pk: RunStatus.STREAMING, waiting.pk: RunStatus.STREAMING}
    assert unended_after == {held.pk, beating.pk}  # taken; the gone one forgotten


async def test_an_end_that_could_not_be_written_is_left_to_the_recovery_sweep(user, monkeypatch):
    from streams.live import recorder as recorder_module
    from streams.pipeline import ends

    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    recorder = RunRecorder(run.pk)

    async def failing(run_id, fields):
        raise RuntimeError("the database is gone")

    monkeypatch.setattr(ends, "write_end", failing)
    try:
        with pytest.raises(RuntimeError):
            await recorder._finish(RunStatus.COMPLETED, None)
        assert run.pk in recorder_module.unended
    finally:
        recorder_module.unended.discard(run.pk)


async def test_recovery_keeps_the_first_byte_the_live_recorder_measured(user, monkeypatch):
    """8513840 wrote every metric column from the replay, which sees the first stored event only: the
    first byte (an SSE comment, half an event) came earlier."""
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(store_rows)(run, completed_log())
    await Event.objects.filter(run_id=run.pk).aupdate(t=F("t") + 40.0)
    await Run.objects.filter(pk=run.pk).aupdate(ttfb_ms=2.0)
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    await recovery.recover_once()
    after = await Run.objects.aget(pk=run.pk)
    assert (after.status, after.ttfb_ms, after.metrics["ttfb_ms"]) == (RunStatus.COMPLETED, 2.0, 2.0)
    assert after.metrics["ttfe_ms"] == 40.0


async def test_a_sweep_keeps_no_replay_once_a_run_is_taken_over(user, monkeypatch):
    runs = [await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1") for _ in range(2)]
    for run in runs:
        await sync_to_async(store_rows)(run, completed_log()[:3])
    found = []
    real = recovery.find_orphans

    def find_orphans():
        found.extend(real())
        return found

    monkeypatch.setattr(recovery, "find_orphans", find_orphans)
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    assert sorted(await recovery.recover_once()) == sorted(run.pk for run in runs)
    assert found and all("_replayed" not in run.__dict__ for run in found)


async def test_an_orphan_whose_take_over_failed_once_is_tried_again_once_silent_for_long(user, monkeypatch, settings):
    """A dead process's run claimed by this sweep, its take-over failing once (a database hiccup), is
    this process's run from then on: its sweep takes it again once it is silent for long (264dbbf's
    sweep took only runs whose end's write failed; found by the second review)."""
    from datetime import timedelta

    from django.db import OperationalError
    from django.utils import timezone

    settings.STREAMSCOPE_STALE_AFTER_S = 0.1
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, worker="gone-host:1")
    await sync_to_async(store_rows)(run, completed_log())
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: False)
    real = recovery.catch_up_row
    calls = []

    def flaky(claimed):
        calls.append(claimed.pk)
        if len(calls) == 1:
            raise OperationalError("database is locked")
        return real(claimed)

    monkeypatch.setattr(recovery, "catch_up_row", flaky)
    assert await recovery.recover_once() == [run.pk]  # claimed; its take-over failed (logged)
    await Run.objects.filter(pk=run.pk).aupdate(heartbeat_at=timezone.now() - timedelta(minutes=5))
    assert await recovery.recover_once() == [run.pk]
    assert (await Run.objects.aget(pk=run.pk)).status == RunStatus.COMPLETED
