"""Executing one run: Streamscope itself streams from the upstream and records every event.

The recording (buffer, flush clock, store, publish, moderation, the run's end) is
streams/live/recorder.py's :class:`RunRecorder`; this module adds the upstream side: the request,
resume after a dropped connection, cancelling upstream, picking up a run whose process died.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpx
from channels.db import database_sync_to_async
from django.conf import settings

from streams.live.recorder import WORKER_NAME, RunLimitExceeded, RunRecorder
from streams.models import Run, RunStatus
from streams.pipeline import store
from streams.pipeline.broadcast import publish_status
from streams.pipeline.flush_clock import flush_clock
from streams.protocol.metrics import TERMINAL_TYPES
from streams.protocol.sse import EventTooLarge, SSEDecoder
from streams.review.moderation import ModerationStopped
from streams.upstream.client import UpstreamError, make_client, open_stream, read_body
from streams.upstream.providers import Provider, UnknownProvider, get_provider

log = logging.getLogger(__name__)

RESUMABLE_CODES = frozenset({"connection_dropped", "connection_error", "stalled"})

__all__ = ["WORKER_NAME", "RunExecutor", "RunLimitExceeded"]


class RunExecutor(RunRecorder):
    """Runs one stored :class:`Run` to its end. Create it, then ``await execute()``."""

    def __init__(self, run_id: int, client: httpx.AsyncClient | None = None, resume: bool = False) -> None:
        super().__init__(run_id)
        self._client = client
        # resume: the run was begun by a process that died; continue it from its stored log.
        self.resume = resume
        self._decoder = SSEDecoder()  # the current request's (see _read)

    # --- the run ---------------------------------------------------------------------------

    async def execute(self) -> str:
        run = await Run.objects.aget(pk=self.run_id)
        try:
            provider = get_provider(run.provider)
        except UnknownProvider as exc:
            return await self._finish(RunStatus.FAILED, {"message": str(exc), "code": "unknown_provider"})
        own_client = self._client is None
        client = self._client or make_client(
            settings.STREAMSCOPE_CONNECT_TIMEOUT_S, settings.STREAMSCOPE_STALL_TIMEOUT_S
        )
        if self.resume:
            await database_sync_to_async(self._load_stored_state)(run)
            started = run.started_at or store.now()
            self._add("streamscope.resume", json.dumps({
                "reason": "the process running this run stopped; resumed from the stored log",
                "starting_after": self.last_upstream_seq, "by": WORKER_NAME}), self._now(), 0)
        else:
            self.t0 = time.monotonic()
            started = store.now()
        await database_sync_to_async(store.update_run)(
            self.run_id, status=RunStatus.STREAMING, started_at=started, worker=WORKER_NAME, heartbeat_at=store.now()
        )
        await publish_status(self.run_id, RunStatus.STREAMING, {}, None)
        clock = flush_clock()
        clock.register(self)
        status, error = RunStatus.FAILED, None
        try:
            await self.moderator.load(run)
            status, error = await self._stream(client, provider, run)
        except ModerationStopped as exc:  # a "stop" rule matched: close the upstream here
            status, error = RunStatus.CANCELLED, exc.error()
            if run.background and self.response_id:
                await self._cancel_upstream(client, provider)
        except asyncio.CancelledError:
            status, error = RunStatus.CANCELLED, None
            if run.background and self.response_id:
                await self._cancel_upstream(client, provider)
        except RunLimitExceeded as exc:
            status, error = RunStatus.FAILED, {"message": str(exc), "code": "run_limit"}
        except Exception as exc:  # the run must end recorded, whatever broke
            log.exception("run %s failed inside Streamscope", self.run_id)
            status, error = RunStatus.FAILED, {"message": f"internal error: {exc!r}", "code": "internal_error"}
        finally:
            clock.unregister(self)
            if own_client:
                await client.aclose()
        return await self._finish(status, error)

    async def _stream(self, client: httpx.AsyncClient, provider: Provider, run: Run) -> tuple[str, Any]:
        attempts = 1 if self.resume else 0
        body = run.request
        while True:
            try:
                if attempts == 0:
                    await self._read(client, provider, method="POST", body=body)
                else:
                    await self._read(
                        client,
                        provider,
                        method="GET",
                        url=f"{provider.base_url.rstrip('/')}/responses/{self.response_id}",
                        params={"stream": "true", "starting_after": self.last_upstream_seq},
                    )
            except UpstreamError as exc:
                can_resume = (
                    run.background
                    and self.response_id
                    and self.last_upstream_seq is not None
                    and exc.code in RESUMABLE_CODES
                    and self.terminal_type is None
                    and attempts < 3
                )
                if not can_resume:
                    if attempts and exc.http_status in (404, 410):
                        # The upstream no longer has the response: what we stored is all there is.
                        error = exc.as_dict()
                        error["message"] = f"the stream could not be resumed: {exc.message}"
                        return RunStatus.INTERRUPTED, error
                    return RunStatus.FAILED, exc.as_dict()
                attempts += 1
                note = {
                    "attempt": attempts,
                    "starting_after": self.last_upstream_seq,
                    "reason": exc.message,
                }
                self._add("streamscope.resume", json.dumps(note), self._now(), 0)
                self.kick()
                await asyncio.sleep(0.25 * 2 ** (attempts - 1))
                continue
            except EventTooLarge as exc:
                return RunStatus.FAILED, {"message": str(exc), "code": "event_too_large"}
            return self._outcome(provider.protocol)

    async def _read(self, client: httpx.AsyncClient, provider: Provider, **request: Any) -> None:
        decoder = self._decoder = SSEDecoder(settings.STREAMSCOPE_MAX_EVENT_BYTES)
        async with open_stream(client, provider, **request) as response:
            await read_body(response, settings.STREAMSCOPE_STALL_TIMEOUT_S, self._body_bytes, self._flush_now)
            frames, _ = decoder.close()
            t = self._now()
            for frame in frames:
                self.accept_frame(frame, t)
            self.record_ignored_lines(decoder.take_ignored(), t)

    def _body_bytes(self, chunk: bytes) -> bool:
        """One network read of the body: its events recorded. Called by the connection itself
        (streams/upstream/body.py), so it must not await; True asks the reader to wait for a flush."""
        t = self._now()
        if t > self.max_duration_ms:
            raise RunLimitExceeded(
                f"the stream ran longer than the limit of {self.max_duration_ms / 1000:g} s and was stopped"
            )
        self.metrics.observe_bytes(t)
        decoder = self._decoder
        self.accept_chunk(decoder, chunk, t)
        if decoder.ignored_lines:
            self.record_ignored_lines(decoder.take_ignored(), t)
        return self._after_chunk()

    def _flush_now(self) -> asyncio.Future:
        return asyncio.shield(self.flush())

    def _load_stored_state(self, run: Run) -> None:
        """Pick up where a dead process left off: seqs, cursor, text, metrics and the clock.

        The original monotonic clock died with its process, so time continues from the wall
        clock since ``started_at``: the gap while nobody streamed shows honestly in ``t``.
        """
        self.response_id = run.response_id
        self.last_upstream_seq = run.last_upstream_seq
        self.next_seq = run.event_count
        for _seq, t, event_type, data in store.iter_event_rows(self.run_id):
            payload = None
            if event_type == "response.output_text.delta" or event_type in TERMINAL_TYPES or event_type == "error":
                payload = json.loads(data)
                self._understand(event_type, payload)
            self.metrics.observe_payload(t, event_type, payload, len(data))
        elapsed = (store.now() - (run.started_at or store.now())).total_seconds()
        self.t0 = time.monotonic() - max(0.0, elapsed)

    async def _cancel_upstream(self, client: httpx.AsyncClient, provider: Provider) -> None:
        url = f"{provider.base_url.rstrip('/')}/responses/{self.response_id}/cancel"
        try:
            await client.post(url, headers=provider.headers(), timeout=5.0)
        except httpx.HTTPError as exc:
            log.warning("run %s: cancelling upstream response failed: %r", self.run_id, exc)
