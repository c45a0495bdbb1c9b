"""The relay's backlog (streams/gateway/backlog.py): chunks come back in the order they went in, with
their times, whether they waited in memory, in the file or in the part not yet written to it."""

from __future__ import annotations

import os
import random

import pytest

from streams.gateway import backlog
from streams.gateway.backlog import Backlog, SpillFailed


@pytest.fixture(autouse=True)
def small_units(monkeypatch):
    monkeypatch.setattr(Backlog, "on_disk", 0)  # a test's backlogs left open count for none of the next
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", 100)
    monkeypatch.setattr(backlog, "READ_BLOCK_BYTES", 64)  # chunks straddle blocks; some are larger than one


def test_chunks_come_back_in_order_through_memory_the_file_and_the_unwritten_part():
    rng = random.Random(5)
    held = Backlog(memory_limit=150, spill_limit=1_000_000)
    sent: list[tuple[bytes, float]] = []
    got: list[tuple[bytes, float]] = []
    for n in range(3000):
        if rng.random() < 0.55:
            chunk = bytes([n % 251]) * rng.randint(1, 90)
            assert held.append(chunk, float(n))
            sent.append((chunk, float(n)))
        elif held:
            got.append(held.popleft())
        assert held.count == len(sent) - len(got)
        assert held.bytes == sum(len(c) for c, _ in sent[len(got):])
    while held:
        got.append(held.popleft())
    assert got == sent
    assert held.spilled_ever > 0  # the file was used, and emptied on the way
    with pytest.raises(IndexError):
        held.popleft()
    held.close()


def test_the_file_is_a_ring_no_larger_than_the_limit_however_much_goes_through():
    held = Backlog(memory_limit=1, spill_limit=600)
    for round_ in range(5):
        for n in range(20):
            assert held.append(b"%d-%02d;" % (round_, n) * 5, n)  # 25 bytes each, 500 a round
        assert [held.popleft()[0] for _ in range(20)] == [b"%d-%02d;" % (round_, n) * 5 for n in range(20)]
    assert held._written >= 2000 and os.fstat(held._file.fileno()).st_size <= 600
    assert Backlog.on_disk == 0
    held.close()


def test_past_the_spill_limit_a_chunk_is_refused_and_nothing_of_it_held():
    held = Backlog(memory_limit=10, spill_limit=50)
    assert held.append(b"m" * 10, 0)  # memory
    assert held.append(b"a" * 30, 1) and held.append(b"b" * 20, 2)  # the file's 50
    assert not held.append(b"c", 3)
    assert held.count == 3 and held.bytes == 60
    assert [held.popleft()[0] for _ in range(3)] == [b"m" * 10, b"a" * 30, b"b" * 20]


def test_a_failed_write_keeps_every_chunk_held_and_says_so(monkeypatch):
    def no_space(**kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backlog.tempfile, "TemporaryFile", no_space)
    held = Backlog(memory_limit=1, spill_limit=10_000)
    held.append(b"first", 0)
    held.append(b"x" * 60, 1)
    with pytest.raises(SpillFailed, match="No space left"):
        held.append(b"y" * 60, 2)  # 120 bytes to write: the file cannot be made
    assert [held.popleft() for _ in range(3)] == [(b"first", 0), (b"x" * 60, 1), (b"y" * 60, 2)]


def test_a_file_that_cannot_be_read_back_fails_clearly(monkeypatch):
    held = Backlog(memory_limit=1, spill_limit=10_000)
    held.append(b"first", 0)
    held.append(b"z" * 200, 1)
    held.append(b"w" * 10, 2)
    assert held.popleft() == (b"first", 0)

    def broken(fd, size, offset):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(backlog.os, "pread", broken)
    with pytest.raises(SpillFailed, match="Input/output error"):
        held.popleft()


def test_close_removes_the_file():
    held = Backlog(memory_limit=1, spill_limit=10_000)
    for n in range(10):
        held.append(b"q" * 50, n)
    fd = held._file.fileno()
    held.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    assert not held and held.bytes == 0


def test_every_backlog_of_the_process_shares_one_limit_on_disk(monkeypatch):
    monkeypatch.setattr(backlog, "PROCESS_SPILL_MAX_BYTES", 100)
    first, second = Backlog(memory_limit=1, spill_limit=10_000), Backlog(memory_limit=1, spill_limit=10_000)
    for held in (first, second):
        assert held.append(b"m", 0)  # in memory: not counted
    assert first.append(b"a" * 60, 1)
    assert not second.append(b"b" * 60, 2)  # 120 on disk: past the process's 100
    assert second.append(b"c" * 40, 3)
    first.close()  # its 60 let go
    assert second.append(b"d" * 60, 4)
    assert [second.popleft()[0] for _ in range(3)] == [b"m", b"c" * 40, b"d" * 60]
    assert Backlog.on_disk == 0
    second.close()


def test_taken_sizes_and_times_are_let_go_as_a_long_spill_is_read(monkeypatch):
    monkeypatch.setattr(backlog, "COMPACT_AFTER", 8)
    held = Backlog(memory_limit=1, spill_limit=1_000_000)
    held.append(b"first", 0)
    for n in range(100):
        held.append(b"%03d" % n, n)
    got = [held.popleft()[0] for _ in range(60)]
    for n in range(100, 130):  # appended while the first are being read
        held.append(b"%03d" % n, n)
    assert len(held._sizes) < 100  # what was taken is not kept
    while held:
        got.append(held.popleft()[0])
    assert got == [b"first"] + [b"%03d" % n for n in range(130)]
    held.close()


def test_a_backlog_that_never_empties_keeps_its_file_within_its_limit(monkeypatch):
    # A recorder that stays a little behind (the backlog never empty) reads the file while the relay
    # appends: the file starts again each time all it holds is read, so it stays within the limit.
    monkeypatch.setattr(backlog, "SPILL_WRITE_BYTES", 64 * 1024)
    monkeypatch.setattr(backlog, "READ_BLOCK_BYTES", 64 * 1024)
    limit = 1024 * 1024
    held = Backlog(64 * 1024, limit)
    before = Backlog.on_disk
    chunk = b"x" * 4096
    try:
        for _ in range(32):  # fill memory and start spilling
            assert held.append(chunk, 0.0)
        for _ in range(20_000):  # 80 MiB through a 1 MiB-limited backlog that always holds ~0.5 MiB
            assert held.append(chunk, 0.0)
            held.popleft()
        assert held.spilled_bytes <= limit
        size = os.fstat(held._file.fileno()).st_size
        assert size <= 4 * limit, f"the file is {size / 2**20:.0f} MiB for {held.spilled_bytes / 2**20:.2f} MiB held"
    finally:
        held.close()
        assert Backlog.on_disk == before
