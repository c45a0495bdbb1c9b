"""Recording behind the relay (streams/gateway/proxy.py, StreamRelay): a paced stream is recorded
chunk by chunk as it streams, a burst once it pauses or ends however long (its backlog past a
memory bound in a file), always complete and in order (or, past what may be held, said lost), and a
stop still numbers its error event after the last event sent.

A burst's first chunk is recorded at once (nothing came before it to call it a burst): the backlog's
memory then holds the second, and with MEMORY_BACKLOG_BYTES = 1 the third on goes to its file.

The upstream is the simulator over real HTTP; its answer is then replayed to the relay in chunks at
a chosen pace, so what "paced" and "burst" mean does not depend on this machine's speed."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from dashboard.api.gateway import GatewayASGI
from streams.gateway import proxy
from tests.gateway.test_asgi import URL, Exchange, auth, django_app, stored_data
from tests.gateway.test_gateway import ended_run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.server]

BODY = {"model": "sim-text", "input": "Why is the sky blue?", "stream": True,
        "metadata": {"sim_seed": "7", "sim_tokens": "60", "sim_tokens_per_s": "max"}}


async def upstream_chunks(sim: str, events_per_chunk: int, tokens: int | None = None) -> list[bytes]:
    """The simulator's answer, a few whole events per chunk."""
    body = BODY if tokens is None else {**BODY, "metadata": {**BODY["metadata"], "sim_tokens": str(tokens)}}
    async with httpx.AsyncClient(timeout=30) as client:
        raw = (await client.post(f"{sim}/responses", json=body)).content
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame.strip()]
    return [b"".join(frames[i:i + events_per_chunk]) for i in range(0, len(frames), events_per_chunk)]


class Replay:
    """Stands in for the upstream's body: the chunks ``gap_s`` apart (``pauses``: longer gaps before
    some), noting before each how many events the relay's recorder had taken; ``then`` runs
    before the chunk of that index."""

    def __init__(self, monkeypatch, chunks: list[bytes], gap_s: float, pauses: dict[int, float] | None = None,
                 then: dict | None = None) -> None:
        self.chunks, self.gap_s, self.pauses, self.then = chunks, gap_s, pauses or {}, then or {}
        self.recorded_before: list[int] = []
        self.relays: list[proxy.StreamRelay] = []
        real_init = proxy.StreamRelay.__init__
        relays = self.relays

        def kept(relay, *args, **kwargs):
            real_init(relay, *args, **kwargs)
            relays.append(relay)

        monkeypatch.setattr(proxy.StreamRelay, "__init__", kept)
        monkeypatch.setattr(proxy, "iter_body", self.body)

    async def body(self, response, stall_timeout):
        relay = self.relays[-1]
        for index, chunk in enumerate(self.chunks):
            if index:
                await asyncio.sleep(self.pauses.get(index, self.gap_s))
            if index in self.then:
                self.then[index](relay)
            self.recorded_before.append(relay.recorder.next_seq)
            yield chunk


def slow_store(monkeypatch, seconds: float) -> None:
    """Every write of events to the database takes ``seconds`` longer."""
    from streams.pipeline import store

    real_write = store.write_batch

    async def slow_write(*args, **kwargs):
        await asyncio.sleep(seconds)
        return await real_write(*args, **kwargs)

    monkeypatch.setattr(store, "write_batch", slow_write)


def stop_numbers_follow_on(exchange) -> None:
    """The stream's sequence numbers, the stop's error event's last: it follows the last one sent."""
    frames = b"".join(exchange.chunks).strip().split(b"\n\n")
    numbers = [json.loads(frame.split(b"data: ", 1)[1])["sequence_number"] for frame in frames]
    assert numbers[-1] == numbers[-2] + 1, f"error event numbered {numbers[-1]} after {numbers[-2]}"


def events_in(chunks: list[bytes]) -> list[int]:
    """How many events the chunks before each hold."""
    counts, total = [], 0
    for chunk in chunks:
        counts.append(total)
        total += chunk.count(b"\ndata: ")
    return counts


async def relay_through_gateway(token: str) -> tuple[Exchange, list[str]]:
    exchange = await Exchange("POST", f"{URL}/responses", json.dumps(BODY).encode(), auth(token)).run(
        GatewayASGI(django_app()))
    got = b"".join(exchange.chunks)
    return exchange, [line[6:] for line in got.decode().splitlines() if line.startswith("data: ")]


async def recorded_chunk_by_chunk(sim_upstream, token, monkeypatch, gap_s: float) -> None:
    """Four chunks ``gap_s`` apart through the gateway: each recorded before the next came, and the
    run completed with every event stored as the client got it."""
    chunks = await upstream_chunks(sim_upstream, 4)
    replay = Replay(monkeypatch, chunks, gap_s=gap_s)
    exchange, sent = await relay_through_gateway(token)
    assert replay.recorded_before == events_in(chunks)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "completed" and await stored_data(run.pk) == sent


async def test_a_paced_stream_is_recorded_while_it_streams(sim_upstream, token, monkeypatch):
    await recorded_chunk_by_chunk(sim_upstream, token, monkeypatch, gap_s=0.03)


async def test_a_burst_is_recorded_after_it_ends_completely_and_in_order(sim_upstream, token, monkeypatch):
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)  # no pause on a slow test machine counts
    chunks = await upstream_chunks(sim_upstream, 4)
    replay = Replay(monkeypatch, chunks, gap_s=0)  # back to back: the relay never waits for bytes
    exchange, sent = await relay_through_gateway(token)
    first = chunks[0].count(b"\ndata: ")
    assert replay.recorded_before == [0] + [first] * (len(chunks) - 1)  # the first chunk, then nothing
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "completed" and await stored_data(run.pk) == sent


async def test_a_first_chunk_as_large_as_a_burst_starts_one(sim_upstream, token, monkeypatch):
    # A relay behind its upstream reads a burst's start as one large chunk: nothing of it is recorded
    # until the burst ends (a paced stream's first chunk, a few KiB, is recorded at once: above).
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    chunks = await upstream_chunks(sim_upstream, 4)
    monkeypatch.setattr(proxy, "FIRST_CHUNK_BURST_BYTES", len(chunks[0]))
    replay = Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    assert replay.recorded_before == [0] * len(chunks)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "completed" and await stored_data(run.pk) == sent


async def test_a_burst_is_recorded_when_it_pauses(sim_upstream, token, monkeypatch):
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 50.0)
    chunks = await upstream_chunks(sim_upstream, 4)
    middle = len(chunks) // 2
    replay = Replay(monkeypatch, chunks, gap_s=0, pauses={middle: 0.5})
    exchange, sent = await relay_through_gateway(token)
    first = chunks[0].count(b"\ndata: ")
    assert replay.recorded_before[middle - 1] == first  # the burst was not recorded while it lasted
    assert replay.recorded_before[middle] == events_in(chunks)[middle]  # but in its pause
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert await stored_data(run.pk) == sent


async def test_a_burst_past_the_memory_bound_is_not_recorded_while_it_lasts_and_whole_after(
        sim_upstream, token, monkeypatch):
    from streams.gateway import backlog

    chunks = await upstream_chunks(sim_upstream, 4)
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    monkeypatch.setattr(proxy, "MEMORY_BACKLOG_BYTES", 1)
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", len(chunks[0]))
    replay = Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    first = chunks[0].count(b"\ndata: ")
    assert replay.recorded_before == [0] + [first] * (len(chunks) - 1)  # the relay never waited for it
    assert replay.relays[-1].backlog.spilled_ever == sum(map(len, chunks[2:]))
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "completed" and run.error is None and await stored_data(run.pk) == sent


async def test_a_burst_recorded_after_it_ends_waits_for_a_slow_database_and_loses_nothing(
        sim_upstream, token, monkeypatch, settings):
    # Decoded after the burst, its events come faster than the database stores them: the recorder
    # waits for the database past FLUSHES_AHEAD flushes' worth, never reaching MAX_HELD_EVENTS
    # (which stops recording, meant for a database that refuses them).
    from streams.gateway import recorder as gateway_recorder

    settings.STREAMSCOPE_FLUSH_MAX_EVENTS = 10  # 80 events ahead at most
    monkeypatch.setattr(gateway_recorder, "MAX_HELD_EVENTS", 120)
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    slow_store(monkeypatch, 0.02)
    chunks = await upstream_chunks(sim_upstream, 4, tokens=400)
    Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    assert len(sent) > 400
    run = await ended_run(int(exchange.headers["x-streamscope-run"]), timeout=30)
    assert run.status == "completed" and run.error is None
    assert await stored_data(run.pk) == sent


async def test_a_burst_recorded_after_it_ends_keeps_the_streams_duration_not_the_recordings(
        sim_upstream, token, monkeypatch):
    import time

    from streams.gateway.recorder import GatewayRecorder

    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    real_take = GatewayRecorder.take

    def slow_take(recorder, chunk, t):
        if replay.relays[-1].pump_finished:
            time.sleep(0.01)  # recording the burst, after it, outlasts it by far
        real_take(recorder, chunk, t)

    monkeypatch.setattr(GatewayRecorder, "take", slow_take)
    chunks = await upstream_chunks(sim_upstream, 4)
    replay = Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]), timeout=30)
    assert run.status == "completed" and await stored_data(run.pk) == sent
    ended_at = replay.relays[-1].ended_at
    assert ended_at < 100  # the recording, after it, took longer (10 ms per chunk)
    assert run.metrics["duration_ms"] == pytest.approx(ended_at, abs=0.06)
    assert run.duration_ms == pytest.approx(ended_at, abs=0.06)  # the list's sortable copy


async def test_a_stop_mid_burst_numbers_its_error_event_after_the_last_event_sent(sim_upstream, token, monkeypatch):
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    chunks = await upstream_chunks(sim_upstream, 4)
    Replay(monkeypatch, chunks, gap_s=0, then={len(chunks) // 2: lambda relay: relay.stop("stopped in the dashboard")})
    exchange, sent = await relay_through_gateway(token)
    frames = b"".join(exchange.chunks).strip().split(b"\n\n")
    numbers = [json.loads(frame.split(b"data: ", 1)[1])["sequence_number"] for frame in frames]
    assert json.loads(frames[-1].split(b"data: ", 1)[1])["error"]["code"] == "cancelled_by_user"
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers)))  # the error event comes next
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "cancelled"
    assert await stored_data(run.pk) == sent[:-1]  # every event sent before the stop, in order


async def test_a_burst_past_what_the_backlog_may_hold_reaches_the_client_whole_and_the_run_says_what_it_lost(
        sim_upstream, token, monkeypatch):
    from streams.gateway import backlog

    chunks = await upstream_chunks(sim_upstream, 4)
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    monkeypatch.setattr(proxy, "MEMORY_BACKLOG_BYTES", 1)
    monkeypatch.setattr(proxy, "SPILL_MAX_BYTES", sum(map(len, chunks[2:5])))  # the sixth chunk does not fit
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", 1)
    Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    assert b"".join(exchange.chunks) == b"".join(chunks)  # the client's stream, whole and unchanged
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    held = sum(chunk.count(b"\ndata: ") for chunk in chunks[:5])
    assert run.status == "failed" and run.error["code"] == "recording_incomplete"
    assert "outgrew" in run.error["message"] and f"after {held} events" in run.error["message"]
    assert await stored_data(run.pk) == sent[:held]


async def test_a_burst_whose_file_cannot_be_written_is_recorded_as_far_as_it_was_held(
        sim_upstream, token, monkeypatch):
    from streams.gateway import backlog

    def no_space(**kwargs):
        raise OSError(28, "No space left on device")

    chunks = await upstream_chunks(sim_upstream, 4)
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    monkeypatch.setattr(proxy, "MEMORY_BACKLOG_BYTES", 1)
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", len(chunks[2]) + len(chunks[3]))
    monkeypatch.setattr(backlog.tempfile, "TemporaryFile", no_space)
    Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    assert b"".join(exchange.chunks) == b"".join(chunks)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    held = sum(chunk.count(b"\ndata: ") for chunk in chunks[:4])  # the third and fourth, written in vain: kept
    assert run.status == "failed" and run.error["code"] == "recording_incomplete"
    assert "No space left on device" in run.error["message"]
    assert await stored_data(run.pk) == sent[:held]


async def test_burst_sized_chunks_that_come_with_pauses_between_are_each_recorded_in_the_pause(
        sim_upstream, token, monkeypatch):
    # Each chunk is big for the time since the one before (a burst by its rate), yet a pause follows
    # it: the recorder, idle with nothing left, must still be woken for the next one.
    monkeypatch.setattr(proxy, "BURST_BYTES_PER_MS", 1.0)
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 10.0)
    await recorded_chunk_by_chunk(sim_upstream, token, monkeypatch, gap_s=0.12)  # each in the pause after it


async def test_a_client_leaving_while_a_stop_waits_for_the_recorder_leaves_it_recording():
    # A dashboard stop first waits for the recorder (its error event is numbered after the last
    # event sent); if the client leaves meanwhile, that wait is cancelled, not the recording.
    from types import SimpleNamespace

    done = asyncio.Event()

    async def catching_up():
        await asyncio.sleep(0.2)
        done.set()

    relay = SimpleNamespace(recording=asyncio.create_task(catching_up()))
    waiter = asyncio.create_task(proxy.StreamRelay._recorded(relay))
    await asyncio.sleep(0.01)
    waiter.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    await asyncio.wait_for(done.wait(), 5)
    assert not relay.recording.cancelled()


async def test_a_recorder_stopped_by_a_limit_reads_no_more_of_its_backlog(sim_upstream, token, monkeypatch, settings):
    # Past the run's event limit the recorder stops; what the backlog (here its file) still holds
    # would be read back for nothing, so it is not, and the client's stream is whole all the same.
    from streams.gateway import backlog

    settings.STREAMSCOPE_MAX_EVENTS_PER_RUN = 10
    chunks = await upstream_chunks(sim_upstream, 4)
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    monkeypatch.setattr(proxy, "MEMORY_BACKLOG_BYTES", 1)
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", 1)
    read_back = []
    real_popleft = backlog.Backlog.popleft

    def counted_popleft(held):
        read_back.append(1)
        return real_popleft(held)

    monkeypatch.setattr(backlog.Backlog, "popleft", counted_popleft)
    Replay(monkeypatch, chunks, gap_s=0)
    exchange, sent = await relay_through_gateway(token)
    assert b"".join(exchange.chunks) == b"".join(chunks) and len(chunks) > 6
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "failed" and run.error["code"] == "recording_incomplete"
    # Every chunk goes through the backlog: the first (4 events) is read at once, the second and
    # third (events 5-12) after the burst, passing the limit of 10; the fourth on stay unread.
    assert len(read_back) == 3
    stored = await stored_data(run.pk)
    assert stored == sent[:len(stored)] and len(stored) <= 10


async def test_a_background_burst_the_client_leaves_is_cancelled_upstream_before_its_recording_catches_up(
        sim_upstream, token, monkeypatch):
    # A background response costs until it is cancelled: once its id is known (the first chunk is
    # recorded at once) the cancel goes out when the client leaves, not after the recorder has
    # read back the burst it holds; the run still keeps every event the client was sent.
    background = {**BODY, "background": True, "metadata": {**BODY["metadata"], "sim_tokens": "200"}}
    async with httpx.AsyncClient(timeout=30) as client:
        raw = (await client.post(f"{sim_upstream}/responses", json=background)).content
    frames = [frame + b"\n\n" for frame in raw.split(b"\n\n") if frame.strip()]
    chunks = [b"".join(frames[i:i + 4]) for i in range(0, len(frames), 4)]
    monkeypatch.setattr(proxy, "BURST_PAUSE_MS", 60_000.0)
    monkeypatch.setattr(proxy, "BURST_BYTES_PER_MS", 0.0)  # every chunk a burst's, 10 ms apart
    monkeypatch.setattr(proxy, "RECORD_SLICE_BYTES", 1)  # the recording yields after every chunk
    exchange = Exchange("POST", f"{URL}/responses", json.dumps(background).encode(), auth(token))
    leave_at = len(chunks) // 2
    Replay(monkeypatch, chunks, gap_s=0.01,
           then={leave_at: lambda relay: exchange.inbox.put_nowait({"type": "http.disconnect"})})
    cancels = []

    async def cancel_upstream(relay):
        cancels.append((relay.recorder.next_seq, sum(c.count(b"\ndata: ") for c in exchange.chunks)))

    monkeypatch.setattr(proxy.StreamRelay, "_cancel_upstream", cancel_upstream)
    await asyncio.wait_for(exchange.run(GatewayASGI(django_app())), 10)
    got = [line[6:] for line in b"".join(exchange.chunks).decode().splitlines() if line.startswith("data: ")]
    assert 4 < len(got) < len(frames)
    run = await ended_run(int(exchange.headers["x-streamscope-run"]))
    assert run.status == "cancelled" and run.error["code"] == "client_disconnected"
    assert len(cancels) == 1
    recorded_then, sent_then = cancels[0]
    assert recorded_then < sent_then == len(got)  # cancelled with the burst still held, not recorded
    assert await stored_data(run.pk) == got  # and every event sent recorded after all
