"""A gateway run created beside its request (no reserved id: a loop's first request or two, PostgreSQL
without the loop's own connection, a resumed stream) beats while the provider is still to answer: its
recorder begins once its row is in, not once the answer's head is (a whole answer may take minutes,
and a silent run is another process's to take over: streams/live/recovery.py)."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import AsyncClient

from streams.gateway import proxy
from streams.live import recorder as recorder_module
from streams.live import recovery
from streams.models import Run, RunStatus

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]


async def test_a_run_waiting_for_a_slow_whole_answer_beats_and_is_not_taken_over(
        sim_upstream, token, settings, monkeypatch):
    settings.STREAMSCOPE_STALE_AFTER_S = 0.2  # another process takes a live process's run after 6 x: 1.2 s
    monkeypatch.setattr(recorder_module, "HEARTBEAT_S", 0.1)
    monkeypatch.setattr(proxy, "take_reserved_id", lambda: None)  # a loop's first request
    body = {"model": "sim-text", "input": "think long", "stream": False,
            "metadata": {"sim_seed": "1", "sim_tokens_per_s": "max", "sim_stall_ms": "2500"}}
    request = asyncio.ensure_future(AsyncClient().post(
        "/gateway/simulator/v1/responses", json.dumps(body), content_type="application/json",
        headers={"Authorization": f"Bearer {token}"}))
    await asyncio.sleep(1.8)  # the answer is still to come
    monkeypatch.setattr(recovery, "WORKER_NAME", "another-process:1")  # its sweep, on this host
    monkeypatch.setattr(recovery, "_process_alive", lambda worker: True)
    taken = await recovery.recover_once()
    during = await Run.objects.aget()
    monkeypatch.undo()
    response = await request
    assert response.status_code == 200
    assert taken == [] and during.status == RunStatus.STREAMING
    assert (during.heartbeat_at - during.created_at).total_seconds() > 1.0  # it beat while waiting
    for _ in range(100):
        after = await Run.objects.aget()
        if after.status != RunStatus.STREAMING:
            break
        await asyncio.sleep(0.05)
    assert after.status == RunStatus.COMPLETED

