"""Recording what the gateway forwards, without ever holding up or breaking the client's stream.

:class:`GatewayRecorder` is the playground's :class:`~streams.live.recorder.RunRecorder` (same
batches, flush clock, store, publishing, metrics and moderation) with one rule added: the client
comes first. Nothing here raises into the forwarding path except
:class:`~streams.review.moderation.ModerationStopped` (a stop rule matched: the gateway ends the
client's stream). A failed database write keeps its events in memory and is retried by the next
flush, so ``seq`` stays dense; what could not be recorded in the end is written on the run.

A run whose id was reserved ahead has no row until the client has its answer's first bytes, or its
request went out 5 ms ago (streams/gateway/run_row.py, ``PendingRow``): nothing of it is stored
before the row is in (a flush waits for it before taking its batch), and an insert that fails is
tried again with the next flush, the run saying so (once) when it ends.

A run whose row was committed without waiting for PostgreSQL's WAL flush (streams/gateway/run_row.py,
a reserved id) can lose that row to a crash of PostgreSQL until the run's first events are stored
(their commit waits for the flush, which covers the row). A lost row shows up as the events' foreign
key failing; the recorder then makes the row again with the same id and stores the events it held,
so the run is whole and says so; a run that stores no event checks for its row before its end.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from channels.db import database_sync_to_async
from django.conf import settings
from django.db import IntegrityError
from django.utils import timezone

from streams.gateway.run_row import IdTaken, Inserted, PendingRow, insert_again
from streams.live.recorder import NOT_A_JSON_OBJECT, RAW_KEEP, RunLimitExceeded, RunRecorder, unended
from streams.models import ModerationRule, Run, RunStatus
from streams.pipeline.broadcast import publish_status
from streams.pipeline.flush_clock import flush_clock
from streams.protocol.rebuild import RESPONSE_BODY  # a non-streamed answer, stored whole as one event
from streams.protocol.sse import EventTooLarge, SSEDecoder
from streams.review.moderation import ModerationStopped

log = logging.getLogger(__name__)

MAX_HELD_EVENTS = 50_000  # events kept in memory while the database refuses them; then recording stops
# Events decoded ahead of the database (in flushes' worth) before the recorder waits for it: a long
# burst is recorded after it ends, faster than a database stores it; the rest waits in the relay's
# backlog (streams/gateway/backlog.py) and the client never waits.
FLUSHES_AHEAD = 8
RETRY_FIRST_S = 0.05  # keep_pace's first pause after a failed write; doubled up to RETRY_MAX_S
RETRY_MAX_S = 1.0
FINAL_ATTEMPTS = 4


class GatewayRecorder(RunRecorder):
    def __init__(self, run_id: int, protocol: str) -> None:
        super().__init__(run_id)
        self.protocol = protocol  # "responses" or "chat": how the end of the stream is judged
        self.decoder = SSEDecoder(settings.STREAMSCOPE_MAX_EVENT_BYTES)
        self.recording = True
        self.losses: list[str] = []  # what was not recorded, in words, for the run's error
        self.failed_writes = 0
        self.write_failing = False  # the last write of events failed (cleared by one that succeeds)
        self.failing_since = 0.0  # the loop's time of the first failure of the current run of them
        self.last_write_error = ""
        self._registered = False
        # The run as inserted while its row may still be lost to a PostgreSQL crash (not yet
        # covered by a commit that waited for the flush); None once it is, or when it never was.
        self.unflushed_row: Run | None = None
        self.row_made_again = False
        # A run whose id was reserved ahead: its row is inserted after the client's first bytes
        # (streams/gateway/run_row.py), and before anything of it is stored (ensure_row); None once in.
        self.pending_row: PendingRow | None = None
        self.row_timer: asyncio.TimerHandle | None = None  # inserts it soon (streams/gateway/proxy.py)
        self.row_late = ""  # why the row went in only on a later try
        self.foreign_row = False  # the reserved id was found taken: nothing is written to that row
        self.stream_ended_at: float | None = None  # when the upstream's body ended (ms), once it has

    # --- the start ---------------------------------------------------------------------------

    def begin(self, run: Run, rules: list[ModerationRule]) -> None:
        """Start recording a run created ``streaming``, with the enabled moderation rules (the
        gateway's per-process copy, streams/gateway/proxy.py). Raises ModerationStopped when an
        input rule stops the request (the gateway then has not sent it)."""
        self.moderator.start(run, rules)
        flush_clock().register(self)
        self._registered = True

    async def ensure_row(self) -> None:
        """The run's row inserted if it is still to be (:attr:`pending_row`); raises when it could not
        be (whatever waits for it, events or the end, is kept for the next try)."""
        pending = self.pending_row
        if pending is None:
            return
        try:
            inserted = await pending.ensure()
        except IdTaken as exc:
            self.pending_row = None
            self.foreign_row = True
            self.buffer = []
            self._stop_recording(f"{exc}; nothing of this run was recorded")
            log.error("run %s (gateway): %s", self.run_id, exc)
            return
        self.pending_row = None
        if inserted is Inserted.UNFLUSHED:  # a crash of PostgreSQL may lose it until events are stored
            self.unflushed_row = pending.run
        if pending.failures:
            self.row_late = (f"inserting the run's row failed {pending.failures} time(s) "
                             f"(last: {pending.last_error}) and succeeded later")

    async def insert_row(self) -> None:
        """The row of a run with a reserved id, once the client has the answer's head and first bytes;
        then viewers are told it streams. Never raises: a failed insert is tried again by the next flush."""
        try:
            await self.ensure_row()
        except Exception as exc:  # noqa: BLE001 - the client's stream goes on; the next flush tries again
            log.warning("run %s (gateway): inserting its row failed, trying again at the next flush: %r",
                        self.run_id, exc)
            return
        if not self.foreign_row and not self._closed:  # not after the run's end was told
            await self.announce()

    async def announce(self) -> None:
        """Tell viewers the run is streaming (after the request went out: it never waits for this)."""
        try:
            await publish_status(self.run_id, RunStatus.STREAMING, {}, None)
        except Exception as exc:  # noqa: BLE001 - the client's request goes on regardless
            self._note(f"telling viewers the run started failed ({exc!r})", exc)

    # --- recording (called for every chunk the client was given) -----------------------------

    def take(self, chunk: bytes, t: float) -> None:
        """Record a chunk. Raises only ModerationStopped."""
        if not self.recording:
            return
        try:
            self.accept_chunk(self.decoder, chunk, t)  # a burst's text deltas together (text_deltas.py)
            if self.decoder.ignored_lines:
                self.record_ignored_lines(self.decoder.take_ignored(), t)
            if len(self.buffer) >= self.flush_max:
                self.kick()
            if len(self.buffer) > MAX_HELD_EVENTS:
                self._stop_recording(f"the database took no events for too long; recording stopped at "
                                     f"event #{self.next_seq} and the {len(self.buffer)} events held were dropped")
                self.buffer = []
        except ModerationStopped:
            raise
        except (RunLimitExceeded, EventTooLarge) as exc:
            self._stop_recording(f"{exc}; the client's stream went on unrecorded")
        except Exception as exc:
            log.exception("run %s: recording a gateway chunk failed", self.run_id)
            self._stop_recording(f"internal error while recording ({exc!r}); the client's stream went on unrecorded")

    async def keep_pace(self) -> None:
        """Wait for the database while FLUSHES_AHEAD flushes' worth of events are decoded and not yet
        stored; the rest waits in the relay's backlog. While writes fail, it tries again after a
        pause that doubles (RETRY_FIRST_S up to RETRY_MAX_S), not once per chunk; after
        STREAMSCOPE_STALL_TIMEOUT_S of nothing but failures it stops recording, saying so. A flush
        that took nothing ends the wait."""
        limit = self.flush_max * FLUSHES_AHEAD
        pause = RETRY_FIRST_S
        loop = asyncio.get_running_loop()
        while self.recording and len(self.buffer) >= limit:
            if self.write_failing:
                if loop.time() - self.failing_since > settings.STREAMSCOPE_STALL_TIMEOUT_S:
                    self._stop_recording(f"the database took no events for {settings.STREAMSCOPE_STALL_TIMEOUT_S:g} s; "
                                         f"recording stopped after {self.next_seq - len(self.buffer)} events stored "
                                         f"and the {len(self.buffer)} held were dropped")
                    self.buffer = []
                    return
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_S)
            held = len(self.buffer)
            self.kick()
            if self._kicked is None:
                return
            await asyncio.wait([self._kicked])
            if not self.write_failing and len(self.buffer) >= held:
                return

    def _duration(self) -> float | None:
        # A burst is recorded after it ends, so the run's end is its stream's, not the recording's.
        return self.stream_ended_at if self.stream_ended_at is not None else super()._duration()

    def take_end(self, t: float) -> None:
        """The upstream closed the body: decode what the decoder still holds."""
        if not self.recording:
            return
        try:
            frames, _ = self.decoder.close()
            for frame in frames:
                self.accept_frame(frame, t)
            self.record_ignored_lines(self.decoder.take_ignored(), t)
        except ModerationStopped:
            raise
        except Exception as exc:  # noqa: BLE001
            self._stop_recording(f"the end of the stream could not be recorded ({exc!r})")

    def take_body(self, body: bytes, t: float) -> tuple[str, Any]:
        """A non-streamed answer: stored whole as one ``streamscope.response_body`` event (the JSON
        as received); returns the run's status and error from what it says."""
        text = body.decode("utf-8", errors="replace")
        try:
            payload = json.loads(text)
        except ValueError:
            payload = None
        data = text if isinstance(payload, dict) else json.dumps({"raw": text[:RAW_KEEP], "error": NOT_A_JSON_OBJECT})
        try:
            self._add(RESPONSE_BODY, data, t, len(body), payload)
        except ModerationStopped:
            pass  # the answer was complete before it was moderated; the flag is recorded
        except Exception as exc:  # noqa: BLE001
            self._stop_recording(f"the answer could not be recorded ({exc!r})")
        return self.understand_body(payload if isinstance(payload, dict) else None)

    def _stop_recording(self, why: str) -> None:
        self.recording = False
        self._note(why)

    def _note(self, what: str, exc: BaseException | None = None) -> None:
        self.losses.append(what)
        log.warning("run %s (gateway): %s", self.run_id, what)

    # --- flushing: a failed write keeps its batch for the next flush ---------------------------

    async def flush(self, final_fields: dict[str, Any] | None = None) -> None:
        # A reserved id's row goes in before any of its events, and before the batch is taken: a flush
        # waiting for it holds no batch, so no two flushes share one (a failed write puts back only
        # its own). A failed insert raises here with nothing taken (noted on the pending row, not as
        # a failed write); the next flush tries again.
        while True:
            while self._flush_lock.locked():  # one at a time, so the batch taken below is this call's
                await asyncio.sleep(0.002)
            if self.pending_row is None:
                break
            await self.ensure_row()  # yields: the lock is looked at again
        if self.foreign_row:
            self.buffer = []
            return
        batch, last_write = self.buffer, self._last_write
        try:
            await super().flush(final_fields)
        except Exception as exc:
            if self._last_write == last_write and self.buffer is not batch:
                self.buffer = batch + self.buffer  # not stored: the next flush writes it, seqs stay dense
            self.failed_writes += 1
            if not self.write_failing:
                self.failing_since = asyncio.get_running_loop().time()
            self.write_failing = True
            self.last_write_error = repr(exc)
            if self.failed_writes == 1:
                log.warning("run %s (gateway): storing events failed, keeping them for the next try: %r",
                            self.run_id, exc)
            if self.unflushed_row is not None and isinstance(exc, IntegrityError):
                await self._make_row_again()  # the events' foreign key found no run: a crash lost it
            raise
        self.write_failing = False
        if self.unflushed_row is not None and batch and self._last_write != last_write:
            self.unflushed_row = None  # events stored: the row is there, and flushed with them

    async def _make_row_again(self) -> None:
        """The run's row, lost to a crash of PostgreSQL, inserted again with its id (never raises)."""
        row = self.unflushed_row
        assert row is not None
        # Beating now: the row can come back long after the run began (PostgreSQL's recovery), and a
        # recovery sweep before the next row write would judge a start-time heartbeat an orphan's.
        row.heartbeat_at = timezone.now()
        try:
            if await database_sync_to_async(insert_again)(row):
                self.row_made_again = True
                log.warning("run %s (gateway): its row was lost by the database before it was flushed; "
                            "made again", self.run_id)
        except Exception as exc:  # noqa: BLE001 - the next flush tries again
            log.warning("run %s (gateway): making its lost row again failed: %r", self.run_id, exc)

    def flush_failed(self, error: BaseException) -> None:
        """The flush clock's report of a failed flush: already noted by :meth:`flush`; the client's
        stream goes on and the next flush tries again (the playground's runs end failed instead)."""

    # --- the end -----------------------------------------------------------------------------

    async def end(self, status: str, error: Any) -> None:
        """Finish the run; retries the final write a few times. Never raises."""
        if self.row_timer is not None:  # the row not yet asked for: inserted here, first
            self.row_timer.cancel()
            self.row_timer = None
        if self._registered:
            flush_clock().unregister(self)
            self._registered = False
        for attempt in range(FINAL_ATTEMPTS):
            try:
                await self.ensure_row()
                break
            except Exception:  # noqa: BLE001 - noted on the pending row; tried again
                await asyncio.sleep(0.1 * 2**attempt)
        else:
            log.error("run %s (gateway): its row could not be inserted (%s); nothing of it was recorded",
                      self.run_id, self.pending_row.last_error if self.pending_row else "")
            return
        if self.foreign_row:
            return
        if self.unflushed_row is not None and not self.buffer:
            # No event was stored or is left to store: nothing else would notice the row gone (an
            # UPDATE of no row succeeds), so it is looked for before the end is written to it.
            await self._make_row_again()
        for attempt in range(FINAL_ATTEMPTS):
            try:
                await self._finish(status, self._with_losses(error))
                return
            except Exception as exc:  # noqa: BLE001
                if self._closed:  # stored; only telling the viewers failed
                    log.warning("run %s (gateway): publishing its end failed: %r", self.run_id, exc)
                    return
                unended.discard(self.run_id)  # tried again here: the recovery sweep's only once given up
                await asyncio.sleep(0.1 * 2**attempt)
        unended.add(self.run_id)
        log.error("run %s (gateway): its end could not be stored (%s); %d events were not recorded",
                  self.run_id, self.last_write_error, len(self.buffer))

    def _with_losses(self, error: Any) -> Any:
        notes = list(self.losses)
        if self.row_late:
            notes.append(self.row_late)
        if self.row_made_again:
            notes.append("the run's row was lost by a restart of the database before it was stored for good "
                         "and was made again with the same id")
        if self.failed_writes:
            notes.append(f"{self.failed_writes} database writes failed and were retried "
                         f"(last: {self.last_write_error})")
        if not notes:
            return error
        note = "; ".join(notes)
        if error is None:
            code = "recording_incomplete" if not self.recording or self.losses else "recording_retried"
            return {"message": f"the client's stream was delivered; recording it: {note}", "code": code}
        if isinstance(error, dict):
            return {**error, "recording": note}
        return error
