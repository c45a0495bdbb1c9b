"""Recording one run's events: timestamp, buffer, store and publish them, moderate, and end the run.

:class:`RunRecorder` is what every way of streaming a run shares: the executor (Streamscope asks the
upstream itself, streams/live/executor.py) and the gateway (an application asks through
Streamscope, streams/gateway/). The reader feeds it SSE frames; the process's flush clock
(streams/pipeline/flush_clock.py) writes the buffer to the database in one statement and then
publishes it to viewers as one message, every few milliseconds, or the run does so itself as soon
as the buffer fills. Database first, then publish: a viewer that misses a message can always
refill from the store.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable
from itertools import repeat
from typing import Any

from django.conf import settings

from streams.models import Run, RunStatus
from streams.pipeline import ends, store
from streams.pipeline.broadcast import listened, publish_events, publish_status
from streams.pipeline.flush_clock import RoundBatch
from streams.protocol import fastjson, text_deltas
from streams.protocol.catalogue import DONE_MARKER, MALFORMED, event_type_for
from streams.protocol.metrics import FIRST_FIGURES, TERMINAL_TYPES, MetricsAccumulator, column_values
from streams.protocol.rebuild import RESPONSE_BODY  # a non-streamed answer, stored whole as one event
from streams.protocol.sse import MATCHING_MIN_BYTES, SSEDecoder, SSEFrame
from streams.protocol.values import BadValue, clean_json, clean_text, usable_response_id
from streams.review.moderation import LiveModerator

log = logging.getLogger(__name__)

RAW_KEEP = 64 * 1024  # how much of a malformed line is kept in its event
NOT_A_JSON_OBJECT = "not a JSON object"  # a non-streamed answer that was not: stored as {"raw": ..., "error": this}
# Runs of this process whose end's write failed (and no retry has written it yet): all their events
# are stored, the row still says streaming; the recovery sweep ends them from their stored log once
# they have been silent for STREAMSCOPE_STALE_AFTER_S (streams/live/recovery.py, find_own_orphans).
unended: set[int] = set()
HEARTBEAT_S = 2.0  # how often a quiet run tells the store it is alive
# How often a live run's row is rewritten (count, heartbeat, upstream cursor, output text): about
# once a second, not with every batch. A row rewrite cost ~35 us of CPU on SQLite, as much as the
# batch's events when runs are many and slow (docs/performance.md). Recovery counts what a dead
# run stored after its row's last write (streams.pipeline.store.catch_up_row).
ROW_EVERY_S = 1.0
# The output text goes with every fifth of those rewrites: SQLite re-indexes the whole text in the
# runs' FTS5 table each time (0.3-1 ms of CPU per rewrite of a 250-1,000 word output, against
# ~10-30 us for the row without it, docs/performance.md), so on SQLite a live run's text is
# searchable about 5 s behind (on PostgreSQL a live run is found by its input only: migration
# 0013); the end writes it whole, and recovery rebuilds an interrupted run's.
TEXT_EVERY_S = 5.0
WORKER_NAME = f"{socket.gethostname()}:{os.getpid()}"
# Events whose payload the run keeps (the final response, its usage, the error): decoded exactly.
EXACT_TYPES = TERMINAL_TYPES | {"error"}


class RunLimitExceeded(Exception):
    pass


class RunRecorder:
    """The recording half of a run: events in, batches to the store and the viewers, the end."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        # Rows as stored, (run_id, seq, t, type, data): the store takes them as they are and a
        # published batch is encoded from them, no object per event in between.
        self.buffer: list[store.Row] = []
        self.next_seq = 0
        self.t0 = 0.0
        self.metrics = MetricsAccumulator()
        self.text_parts: list[str] = []
        self.response_id = ""
        self.last_upstream_seq: int | None = None
        self.terminal_type: str | None = None
        self.terminal_response: dict[str, Any] | None = None
        self.error_event: dict[str, Any] | None = None
        self.saw_done_marker = False
        self.chat_finish_reason: str | None = None
        self._flush_lock = asyncio.Lock()
        self._in_round: RoundBatch | None = None  # a batch of ours is in the flush clock's round
        # What a flush of the run's own waits on while _in_round is set: made only when one does
        # (rare: a full buffer, the end), not for every batch of every round.
        self._round_over: asyncio.Future | None = None
        self._kicked: asyncio.Task | None = None
        self._flush_error: BaseException | None = None
        self._closed = False  # the run's end is stored
        self._ending = False  # _finish began: its flushes take the last events, not the row
        self._last_row_save = 0.0
        self._last_text_save = 0.0
        self._row_has_response_id = False
        self._firsts_saved: set[str] = set()  # FIRST_FIGURES columns written on the row
        self.replayed_chat = False  # replay_stored saw Chat Completions chunks
        self.body_outcome: tuple[str, Any] | None = None  # replay_stored's non-streamed answer: its status, error
        self._last_write = time.monotonic()
        self.max_events = settings.STREAMSCOPE_MAX_EVENTS_PER_RUN
        # An upstream that never closes (keep-alive comments forever) still ends some time.
        self.max_duration_ms = settings.STREAMSCOPE_MAX_RUN_SECONDS * 1000.0
        self.flush_max = settings.STREAMSCOPE_FLUSH_MAX_EVENTS
        self.moderator = LiveModerator(run_id)  # live moderation rules (streams/review/moderation.py)

    # --- recording events -----------------------------------------------------------------

    def _add(self, event_type: str, data: str, t: float, nbytes: int, payload: Any = None) -> None:
        if self.next_seq >= self.max_events:
            raise RunLimitExceeded(
                f"the run reached the limit of {self.max_events} events and was stopped"
            )
        if not event_type.isascii() or "\x00" in event_type:
            event_type = clean_text(event_type)  # the upstream names it: "\ud800" or NUL must not reach the store
        self.buffer.append((self.run_id, self.next_seq, t, event_type, data))
        self.next_seq += 1
        self.metrics.observe_payload(t, event_type, payload, nbytes)
        if self.moderator.matchers:  # a run without live moderation rules skips the call
            self.moderator.observe(self.next_seq - 1, event_type, payload)  # raises ModerationStopped

    def accept_frame(self, frame: SSEFrame, t: float) -> None:
        data = frame.data
        if data == "[DONE]":
            self.saw_done_marker = True
            self._add(DONE_MARKER, '{"raw":"[DONE]"}', t, frame.nbytes)
            return
        try:
            payload = fastjson.decode(data)
        except (ValueError, RecursionError) as exc:
            record = {"raw": data[:RAW_KEEP], "error": f"invalid JSON in data line: {exc}", "where": "data"}
            if frame.event:
                record["event"] = frame.event
            if len(data) > RAW_KEEP:
                record["truncated_from"] = len(data)
            self._add(MALFORMED, json.dumps(record), t, frame.nbytes)
            return
        event_type = event_type_for(payload, frame.event)
        if isinstance(payload, dict):
            sequence_number = payload.get("sequence_number")
            if isinstance(sequence_number, int):
                if self.last_upstream_seq is not None and sequence_number <= self.last_upstream_seq:
                    return  # already stored before a resume: keep every event exactly once
                self.last_upstream_seq = sequence_number
            if event_type in EXACT_TYPES or "usage" in payload:
                payload = fastjson.exact(data)  # the run keeps its numbers (usage): every digit of them
            self._understand(event_type, payload)
        self._add(event_type, data, t, frame.nbytes, payload)

    def accept_chunk(self, decoder: SSEDecoder, chunk: bytes, t: float) -> None:
        """The events of one network read, fed to ``decoder``: each as :meth:`accept_frame` takes it,
        a fast stream's text deltas together (streams/protocol/text_deltas.py), to the same rows,
        sequence numbers, text and metrics."""
        if len(chunk) < MATCHING_MIN_BYTES or self.moderator.matchers:  # a few events; live rules see each
            for frame in decoder.feed(chunk):
                self.accept_frame(frame, t)
            return
        frames, matched = decoder.feed_matching(chunk, text_deltas.PREFIX)
        for frame in frames:
            self.accept_frame(frame, t)
        if matched is None:
            return
        count = len(matched.values)
        first = self.next_seq
        deltas = text_deltas.read(matched.values, self.last_upstream_seq) \
            if first + count <= self.max_events else None
        if deltas is None:  # what only the events one by one can tell (or the run's limit)
            for frame in matched.frames():
                self.accept_frame(frame, t)
            return
        self.last_upstream_seq = deltas.last_seq
        if deltas.text:
            self.text_parts.append(deltas.text)
        self.buffer.extend(zip(repeat(self.run_id, count), range(first, first + count), repeat(t, count),
                               repeat(text_deltas.TYPE, count), deltas.data))
        self.next_seq = first + count
        self.metrics.observe_many(t, text_deltas.TYPE, count, matched.nbytes)

    def _understand(self, event_type: str, payload: dict[str, Any]) -> None:
        """The little the runner itself must know; full understanding lives in rebuild.py."""
        if event_type == "response.output_text.delta":
            delta = payload.get("delta")
            if isinstance(delta, str):
                self.text_parts.append(delta)
        elif event_type == "chat.completion.chunk":
            choices = payload.get("choices")
            for choice in choices if isinstance(choices, list) else ():  # another shape: no text
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                delta = choice.get("delta") or {}
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    self.text_parts.append(delta["content"])
                if choice.get("finish_reason"):
                    self.chat_finish_reason = str(choice["finish_reason"])
        elif event_type.startswith("response.") and isinstance(payload.get("response"), dict):
            response = payload["response"]
            if not self.response_id:
                self.response_id = usable_response_id(response.get("id"))
            if event_type in TERMINAL_TYPES:
                self.terminal_type = event_type
                self.terminal_response = response
        elif event_type == "error":
            self.error_event = payload

    def record_ignored_lines(self, lines: list[bytes], t: float) -> None:
        for line in lines:
            text = line.decode("utf-8", errors="replace")
            self._add(
                MALFORMED,
                json.dumps({"raw": text,
                            "error": "line is not an SSE field (expected data:, event:, id:, retry: or :comment)",
                            "where": "line"}),
                t,
                len(line),
            )

    # --- flushing --------------------------------------------------------------------------

    def _take(self, final_fields: dict[str, Any] | None = None) -> RoundBatch:
        """The buffer as a batch to store (and the row's fields when they are due), emptied."""
        batch, self.buffer = self.buffer, []
        clock = time.monotonic()
        fields: dict[str, Any] | None = None
        # The row about once a second (ROW_EVERY_S), at once when the response id is first known
        # (recovery needs it to resume), and at the end; not with the last events (_finish writes
        # the row right after them).
        if final_fields is not None or (not self._ending and (
                clock - self._last_row_save >= ROW_EVERY_S or (self.response_id and not self._row_has_response_id))):
            fields = {"event_count": self.next_seq, "heartbeat_at": store.now()}
            if self.last_upstream_seq is not None:
                fields["last_upstream_seq"] = self.last_upstream_seq
            if self.response_id:
                fields["response_id"] = self.response_id
            if len(self._firsts_saved) < len(FIRST_FIGURES):
                self._add_firsts(fields)
            if clock - self._last_text_save >= TEXT_EVERY_S:
                # Rewritten whole (TEXT_EVERY_S), and kept as that one string from now on: a delta
                # is a few characters in an object of ~50 bytes, and a run holds its text for its life.
                text = "".join(self.text_parts)
                self.text_parts = [text]
                fields["output_text"] = clean_text(text)
            if final_fields:
                fields.update(final_fields)
        return RoundBatch(self.run_id, batch, fields, clock)

    def _add_firsts(self, fields: dict[str, Any]) -> None:
        """The run's first-event figures known since the row's last write (the runs list and the live
        wall show them while it streams; the rest of its metrics come with its end)."""
        metrics = self.metrics
        for column, attribute in FIRST_FIGURES:
            if column not in self._firsts_saved and (value := getattr(metrics, attribute)) is not None:
                fields[column] = round(value, 1)  # counted as saved once written (_stored)

    def _stored(self, taken: RoundBatch, final: bool) -> None:
        if taken.fields is not None:  # written (a row the round failed to write has its fields dropped)
            self._firsts_saved.update(column for column, _ in FIRST_FIGURES if column in taken.fields)
            self._last_row_save = taken.taken_at
            if "output_text" in taken.fields:
                self._last_text_save = taken.taken_at
            self._row_has_response_id = "response_id" in taken.fields
        self._closed = final
        self._last_write = time.monotonic()

    async def flush(self, final_fields: dict[str, Any] | None = None) -> None:
        async with self._flush_lock:
            while self._in_round is not None:  # the clock's round has a batch of ours: it goes first
                if self._round_over is None:
                    self._round_over = asyncio.get_running_loop().create_future()
                await asyncio.shield(self._round_over)
            if self._closed:
                return  # a tick that began before the run ended must not rewrite its final fields
            taken = self._take(final_fields)
            if taken.rows or taken.fields is not None:
                await store.write_batch(self.run_id, taken.rows, taken.fields)  # grouped with other runs' batches
            self._stored(taken, final_fields is not None)
            if taken.rows and listened(self.run_id):
                _, first, encoded = taken.published()  # the rows let go (RoundBatch.published)
                try:
                    await publish_events(self.run_id, first, encoded)
                except Exception as exc:
                    # Stored already; viewers refill what a lost publish did not bring them.
                    log.warning("run %s: publishing events %d.. failed: %r", self.run_id, first, exc)
            await self.moderator.commit(final=final_fields is not None)  # store + publish new flags

    # What the flush clock asks of a run (streams/pipeline/flush_clock.py).

    def flush_due(self, now: float) -> bool:
        if self._flush_lock.locked() or self._in_round is not None:
            return False  # its last flush is still being written: the next tick takes the rest
        # A quiet stream still writes a heartbeat, so other processes know it is alive.
        return bool(self.buffer) or now - self._last_write > HEARTBEAT_S

    def take_batch(self) -> RoundBatch | None:
        """The batch for the clock's round (stored and published with every other due run's, see
        FlushClock.tick); None to be flushed on its own instead: a subclass with a flush of its own
        (the gateway keeps a batch that failed to store) or a run already ended."""
        if type(self).flush is not RunRecorder.flush or self._closed:
            return None
        taken = self._in_round = self._take()
        return taken

    def batch_done(self, taken: RoundBatch, error: BaseException | None) -> Awaitable[Any] | None:
        """The round stored (and published) ``taken``, or failed with ``error``; what is left to do
        for this run (its new moderation flags), if anything."""
        self._in_round = None
        over, self._round_over = self._round_over, None
        if over is not None and not over.done():
            over.set_result(None)
        if error is not None:
            self.flush_failed(error)
            return None
        self._stored(taken, final=False)
        return self.moderator.commit() if self.moderator.pending else None

    def flush_failed(self, error: BaseException) -> None:
        log.error("run %s: storing a batch of events failed", self.run_id, exc_info=error)
        self._flush_error = error

    def kick(self) -> None:
        """Flush now rather than at the next tick (a full buffer, a resume note)."""
        if self._kicked is None or self._kicked.done():
            self._kicked = asyncio.create_task(self._kicked_flush(), name=f"flush-run-{self.run_id}")

    async def _kicked_flush(self) -> None:
        try:
            await self.flush()
        except Exception as exc:
            self.flush_failed(exc)

    def _after_chunk(self) -> bool:
        """Kick a flush when the buffer is full; True when the reader should wait for one."""
        if self._flush_error is not None:
            raise self._flush_error  # the run ends failed, recorded by _finish
        size = len(self.buffer)
        if size >= self.flush_max:
            self.kick()
        return size >= self.flush_max * 8

    # --- the end of the run -----------------------------------------------------------------

    def _outcome(self, protocol: str) -> tuple[str, Any]:
        """How the stream ended: a status and an error, from what it said (``protocol``: responses or chat)."""
        if self.terminal_type == "response.completed":
            return RunStatus.COMPLETED, None
        if self.terminal_type == "response.incomplete":
            return RunStatus.INCOMPLETE, None
        if self.terminal_type == "response.failed":
            return RunStatus.FAILED, self._failure_error()
        if self.error_event is not None:
            return RunStatus.FAILED, self._failure_error()
        if protocol == "chat" and (self.saw_done_marker or self.chat_finish_reason):
            # Chat Completions says "ran out of tokens" with finish_reason, not a terminal event.
            if self.chat_finish_reason in ("length", "content_filter"):
                return RunStatus.INCOMPLETE, None
            return RunStatus.COMPLETED, None
        if self.next_seq == 0:
            return RunStatus.FAILED, {"message": "the upstream closed the stream without sending any event",
                                      "code": "empty_stream"}
        return RunStatus.FAILED, {
            "message": "the upstream closed the stream before a terminal event"
                       " (response.completed, .incomplete or .failed)",
            "code": "truncated_stream",
        }

    def understand_body(self, payload: dict[str, Any] | None) -> tuple[str, Any]:
        """A non-streamed answer (the gateway's, stored as one ``streamscope.response_body`` event;
        None: it was not a JSON object): its text, usage and response id taken in, and the run's
        status and error from what it says."""
        if payload is None:
            return RunStatus.FAILED, {"message": "the upstream's answer is not a JSON object", "code": "not_json"}
        usage = payload.get("usage")
        if isinstance(usage, dict):  # the run's token figures (runs list, compare), as a stream's end gives them
            chat = payload.get("object") == "chat.completion"
            self.metrics.usage = {"output_tokens": usage.get("completion_tokens"), **usage} if chat else usage
        if payload.get("object") == "chat.completion":
            choices = payload.get("choices")
            first = choices[0] if isinstance(choices, list) and choices and isinstance(choices[0], dict) else {}
            message = first.get("message") or {}
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                self.text_parts.append(message["content"])
            self.terminal_response = {"usage": payload.get("usage"), "output": []}
            finish = first.get("finish_reason")
            return (RunStatus.INCOMPLETE if finish in ("length", "content_filter") else RunStatus.COMPLETED), None
        if usable_response_id(payload.get("id")):
            self.response_id = usable_response_id(payload.get("id"))
        self.terminal_response = payload
        status = payload.get("status")
        if status == "failed":
            self.terminal_type = "response.failed"
            return RunStatus.FAILED, self._failure_error()
        if status == "incomplete":
            return RunStatus.INCOMPLETE, None
        if status == "cancelled":
            return RunStatus.CANCELLED, None
        # completed, or queued/in_progress for a background request: the request itself completed.
        return RunStatus.COMPLETED, None

    def _failure_error(self) -> dict[str, Any]:
        """The error as the upstream described it: nested or flat ``error`` event, or response.error."""
        detail: dict[str, Any] = {}
        if self.error_event is not None:
            nested = self.error_event.get("error")
            detail = nested if isinstance(nested, dict) else self.error_event
        elif self.terminal_response and isinstance(self.terminal_response.get("error"), dict):
            detail = self.terminal_response["error"]
        message = detail.get("message") or "the upstream reported a failure"
        return {"message": str(message), "code": str(detail.get("code") or detail.get("type") or "upstream_failed")}

    def _now(self) -> float:
        return (time.monotonic() - self.t0) * 1000.0

    def _duration(self) -> float | None:
        """The run's duration in ms for its metrics: until now, its end (the gateway's: the stream's)."""
        return self._now() if self.t0 else None

    def final_fields(self, status: str, error: Any) -> dict[str, Any]:
        """The run's row at its end, from what this recorder has understood of its events."""
        output_text = "".join(self.text_parts)
        usage = None
        if self.terminal_response:
            usage = self.terminal_response.get("usage")
            output_text = _response_output_text(self.terminal_response) or output_text
        metrics = self.metrics.snapshot(duration_ms=self._duration())
        return {
            "status": status,
            "error": _storable(error),
            # Upstream text may carry lone surrogates (JSON "\ud800" escapes) no database or page
            # can encode: stored with U+FFFD instead (the events keep the exact bytes).
            "output_text": clean_text(output_text),
            "usage": _storable(usage),
            "metrics": metrics,
            **column_values(metrics),  # the indexed copies the runs list sorts and filters on
            "finished_at": store.now(),
        }

    async def _finish(self, status: str, error: Any) -> str:
        final = self.final_fields(status, error)
        metrics = final["metrics"]
        # The last events first, stored and published as any batch; then the end on the run's row, in
        # a write of its own (grouped with other runs' ends, streams/pipeline/ends.py): the end rewrites
        # the whole text (and on PostgreSQL its search vector and every index of the row), and the last
        # events of 1,000 runs ending together waited for all those ends (docs/performance.md).
        self._ending = True
        await self.flush()
        while self.buffer and not self._closed:  # taken by a flush that began before the run ended
            await self.flush()
        if not self._closed:
            async with self._flush_lock:
                taken = self._take(final)  # the row's fields: every event is stored
                try:
                    await ends.write_end(self.run_id, taken.fields)
                except BaseException:
                    unended.add(self.run_id)  # the recovery sweep ends it from its log, unless a retry does
                    raise
                unended.discard(self.run_id)
                self._stored(taken, final=True)
        await self.moderator.commit(final=True)  # store + publish the flags held back to the end
        await publish_status(self.run_id, status, metrics, error, last_seq=self.next_seq - 1)
        log.info("run %s ended %s after %d events", self.run_id, status, self.next_seq)
        return status


def replay_stored(run_id: int) -> RunRecorder:
    """A recorder that has understood a run's stored events as it does while the run streams (its
    text, response id, terminal event or error, a chat's finish and ``[DONE]``, its metrics and
    usage), storing nothing: for a run that ended without its recorder (the row has its text only
    every TEXT_EVERY_S). Its byte count is of the stored payloads (live: the frames as they came)."""
    recorder = RunRecorder(run_id)
    for _seq, t, event_type, data in store.iter_event_rows(run_id):
        if event_type == DONE_MARKER:
            recorder.saw_done_marker = True
            recorder.metrics.observe(t, event_type, len(data))
            continue
        try:
            payload = json.loads(data)
        except (ValueError, RecursionError):  # stored as it came: orjson, live, nests deeper than json
            recorder.metrics.observe(t, event_type, len(data))
            continue
        recorder.metrics.observe_payload(t, event_type, payload, len(data))
        if event_type == RESPONSE_BODY and isinstance(payload, dict):
            unreadable = set(payload) == {"raw", "error"} and payload["error"] == NOT_A_JSON_OBJECT
            recorder.body_outcome = recorder.understand_body(None if unreadable else payload)
        elif isinstance(payload, dict):
            recorder._understand(event_type, payload)
            if event_type == "chat.completion.chunk":
                recorder.replayed_chat = True
    return recorder


def replay_run(run: Run) -> RunRecorder:
    """:func:`replay_stored` of ``run``, with the first-event figures its row holds: what the live
    recorder measured stands (the first byte came before the first whole event: an SSE comment, a
    split event, which is all the replay sees). For a run ended without its recorder: recovery
    (streams/live/recovery.py) and a Stop of a run no process holds (streams/live/launcher.py, worker.py)."""
    replay = replay_stored(run.pk)
    for column, attribute in FIRST_FIGURES:
        if (value := getattr(run, column)) is not None:
            setattr(replay.metrics, attribute, value)
    return replay


def stored_ending(recorder: RunRecorder) -> tuple[str, Any] | None:
    """How the stream ended, from the events ``recorder`` replayed (:func:`replay_stored`), when they
    hold its end: a terminal event, an error event, a chat's finish or ``[DONE]``; else None. A run's
    last events are stored before its end is written on its row, so a process that died between the
    two leaves a run whose log says how it ended. A non-streamed answer stored whole is its end."""
    if recorder.body_outcome is not None:
        return recorder.body_outcome
    chat = recorder.replayed_chat  # a Responses stream may end in [DONE] too: not its end
    if recorder.terminal_type is None and recorder.error_event is None and not (
            chat and (recorder.saw_done_marker or recorder.chat_finish_reason)):
        return None
    return recorder._outcome("chat" if chat else "responses")


def _storable(value: Any) -> Any:
    """An upstream JSON value made safe to store: no lone surrogates, bounded nesting."""
    try:
        return clean_json(value)
    except BadValue as exc:
        return {"note": f"not stored: {exc}"}


def _response_output_text(response: dict[str, Any]) -> str:
    """Concatenated output_text parts of message items, as the SDK's ``output_text`` does. Upstream
    JSON of another shape (an ``output`` or ``content`` that is not a list, a ``text`` that is not a
    string) adds nothing: the run still ends, with the text its deltas gave."""
    parts = []
    output = response.get("output")
    for item in output if isinstance(output, list) else ():
        content = item.get("content") if isinstance(item, dict) and item.get("type") == "message" else None
        for part in content if isinstance(content, list) else ():
            if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str):
                parts.append(part["text"])
    return "".join(parts)
