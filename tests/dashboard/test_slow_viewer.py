"""A slow viewer is bounded: past a buffer limit it stops getting live batches and catches up from
the store once it reads again, so it never slows the run or the other viewers, and still ends
with every event exactly once, in order."""

from __future__ import annotations

import asyncio
import json
import socket

import httpx
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from dashboard import consumers, socket_watches
from dashboard.consumers import RunConsumer
from streams.models import RunStatus
from streams.pipeline.broadcast import publish_events, publish_status
from streams.protocol.records import encode_record
from tests.support.factories import add_events, make_run
from tests.support.servers import manage, start_daphne, stop_process


class GaugedConsumer(RunConsumer):
    """The real consumer with its socket's unsent-bytes gauge under the test's control."""

    pending = 0

    def unsent(self) -> int:
        return GaugedConsumer.pending


def encoded(seqs):
    return [encode_record(s, float(s), "response.output_text.delta", json.dumps({"delta": f"w{s}"})) for s in seqs]


async def frames(comm, until_seq: int, timeout: float = 3.0) -> tuple[list[int], list[dict]]:
    seqs, statuses = [], []
    while not seqs or seqs[-1] < until_seq:
        frame = json.loads(await comm.receive_from(timeout=timeout))
        if frame["type"] == "events":
            seqs.extend(e["seq"] for e in frame["events"])
        else:
            statuses.append(frame)
    return seqs, statuses


@pytest.fixture
def gauged(user):
    GaugedConsumer.pending = 0
    communicators = []

    async def connect(run):
        comm = WebsocketCommunicator(GaugedConsumer.as_asgi(), f"/ws/runs/{run.pk}/")
        comm.scope["user"] = user
        comm.scope["url_route"] = {"kwargs": {"run_id": run.pk}}
        communicators.append(comm)
        connected, _ = await comm.connect()
        assert connected
        return comm

    yield connect
    GaugedConsumer.pending = 0


@pytest.mark.django_db(transaction=True)
async def test_a_viewer_past_the_limit_skips_live_batches_then_catches_up_from_the_store(gauged, user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=10)
    comm = await gauged(run)
    try:
        seqs, _ = await frames(comm, 9)
        assert seqs == list(range(10))
        await comm.receive_from()  # the "streaming" status
        GaugedConsumer.pending = consumers.VIEWER_HIGH_WATER + 1
        for start in (10, 20):
            await sync_to_async(add_events)(run, range(start, start + 10))
            await publish_events(run.pk, start, encoded(range(start, start + 10)))
        assert await comm.receive_nothing(timeout=0.3)  # nothing more piles up in its buffer
        GaugedConsumer.pending = consumers.VIEWER_LOW_WATER  # drained enough
        await sync_to_async(add_events)(run, range(30, 40))
        await publish_events(run.pk, 30, encoded(range(30, 40)))
        seqs, _ = await frames(comm, 39)
        assert seqs == list(range(10, 40))  # the skipped batches came from the store, once, in order
        await sync_to_async(add_events)(run, range(40, 45))
        await publish_events(run.pk, 40, encoded(range(40, 45)))
        seqs, _ = await frames(comm, 44)
        assert seqs == list(range(40, 45))  # and live again
    finally:
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_viewer_still_behind_at_the_end_gets_the_rest_when_it_reads(gauged, user):
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=5)
    comm = await gauged(run)
    try:
        await frames(comm, 4)
        await comm.receive_from()
        GaugedConsumer.pending = consumers.VIEWER_HIGH_WATER + 1
        await sync_to_async(add_events)(run, range(5, 3000))
        await publish_events(run.pk, 5, encoded(range(5, 3000)))
        await publish_status(run.pk, RunStatus.COMPLETED, {}, None, last_seq=2999)
        assert await comm.receive_nothing(timeout=0.3)
        GaugedConsumer.pending = 0
        seqs, statuses = await frames(comm, 2999)
        assert seqs == list(range(5, 3000))
        status = statuses[0] if statuses else json.loads(await comm.receive_from())
        assert status["status"] == "completed"
    finally:
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_big_batches_are_split_into_frames_daphne_can_send(gauged, user):
    run = await sync_to_async(make_run)(user, status=RunStatus.COMPLETED, events=2000)
    comm = await gauged(run)
    try:
        seqs, sizes = [], []
        while len(seqs) < 2000:
            raw = await comm.receive_from()
            sizes.append(len(raw.encode()))
            seqs.extend(e["seq"] for e in json.loads(raw)["events"])
        assert seqs == list(range(2000))
        big = await sync_to_async(make_run)(user, status=RunStatus.COMPLETED)
        from streams.models import Event

        padding = "\u00e9" * 3000  # 2 bytes each in UTF-8
        await Event.objects.abulk_create(Event(run=big, seq=s, t=float(s), type="x", data=json.dumps(
            {"type": "x", "pad": padding}, ensure_ascii=False)) for s in range(1000))
        comm2 = await gauged(big)
        got = 0
        while got < 1000:
            raw = await comm2.receive_from()
            assert len(raw.encode()) < 1024 * 1024  # Daphne's limit for one websocket message
            got += len(json.loads(raw)["events"])
        await comm2.disconnect()
    finally:
        await comm.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_a_viewer_whose_final_status_message_was_dropped_still_ends(gauged, user, monkeypatch):
    monkeypatch.setattr(socket_watches, "STATUS_CHECK_S", 0.2)
    run = await sync_to_async(make_run)(user, status=RunStatus.STREAMING, events=3)
    comm = await gauged(run)
    try:
        await frames(comm, 2)
        await comm.receive_from()  # "streaming"
        # The run ends in the store, but its status message never reaches this process.
        await sync_to_async(add_events)(run, range(3, 6))
        await run.__class__.objects.filter(pk=run.pk).aupdate(status=RunStatus.COMPLETED)
        seqs, statuses = await frames(comm, 5, timeout=5)
        assert seqs == [3, 4, 5]
        status = statuses[0] if statuses else json.loads(await comm.receive_from(timeout=5))
        assert status["status"] == "completed" and status["last_seq"] == 5
        assert await comm.receive_nothing(timeout=0.5)  # said once
    finally:
        await comm.disconnect()


# --- for real: Daphne, a fast viewer, and a viewer that does not read ------------------------

@pytest.fixture
def app(tmp_path):
    # Embedded, in its own SQLite file, even when the suite runs against PostgreSQL/Redis: this is
    # about Daphne's socket buffers, and a shared database would already hold the user.
    embedded = {"DATABASE_URL": "", "REDIS_URL": "", "STREAMSCOPE_LAUNCHER": "asyncio"}
    manage(tmp_path, "migrate", "--noinput", env=embedded)
    manage(tmp_path, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('alice', password='alice-pass-123')",
           env=embedded)
    process, base_url = start_daphne(tmp_path, extra_env={**embedded, "STREAMSCOPE_LOG_LEVEL": "INFO"})
    try:
        yield base_url, tmp_path
    finally:
        stop_process(process)


def login(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=10)
    client.get("/accounts/login/")
    client.post("/accounts/login/", data={"username": "alice", "password": "alice-pass-123",
                                          "csrfmiddlewaretoken": client.cookies["csrftoken"]})
    return client


async def open_socket(base_url: str, client: httpx.Client, run_id: int, receive_buffer: int | None = None):
    import websockets

    sock = None
    if receive_buffer:
        # A tiny kernel receive buffer: an unread socket backs up into Daphne quickly.
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.connect(("127.0.0.1", int(base_url.rsplit(":", 1)[1])))
    cookie = "; ".join(f"{k}={v}" for k, v in client.cookies.items())
    return await websockets.connect(base_url.replace("http", "ws") + f"/ws/runs/{run_id}/", sock=sock,
                                    additional_headers={"Cookie": cookie, "Origin": base_url},
                                    max_queue=1 if receive_buffer else 64, max_size=None, ping_interval=None)


async def read_until_end(socket_) -> list[dict]:
    events = []
    async for raw in socket_:
        frame = json.loads(raw)
        if frame["type"] == "events":
            events.extend(frame["events"])
        elif frame["status"] not in ("queued", "streaming"):
            return events
    raise AssertionError("socket closed before the run ended")


@pytest.mark.server
async def test_a_browser_that_stops_reading_holds_up_neither_the_run_nor_the_other_viewer(app):
    base_url, var_dir = app
    client = login(base_url)
    body = {"provider": "simulator", "model": "sim-text", "input": "flood",
            "params": {"background": False, "metadata": {"sim_tokens_per_s": "20000", "sim_tokens": "40000",
                                                         "sim_first_token_ms": "1000", "sim_seed": "1"}}}
    run_id = client.post("/api/runs/", json=body, headers={"X-CSRFToken": client.cookies["csrftoken"]}).json()["id"]
    slow = await open_socket(base_url, client, run_id, receive_buffer=4096)
    fast = await open_socket(base_url, client, run_id)
    try:
        fast_events = await asyncio.wait_for(read_until_end(fast), 60)
        # The run ended and the fast viewer has it all while the slow one has read nothing yet.
        run = client.get(f"/api/runs/{run_id}/").json()
        assert run["status"] == "completed"
        assert [e["seq"] for e in fast_events] == list(range(run["event_count"]))
        slow_events = await asyncio.wait_for(read_until_end(slow), 60)
        assert slow_events == fast_events
    finally:
        await slow.close()
        await fast.close()
    log = b"".join(path.read_bytes() for path in var_dir.glob("daphne-*.log")).decode()
    assert "fell behind" in log  # the bound did its job (not just the kernel buffers)
