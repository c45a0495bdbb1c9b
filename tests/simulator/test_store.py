"""The simulator's store of responses (simulator.background.ResponseStore) holds its count on every
add, and forgets old responses and the oldest over its byte limit when it reads every entry, which it
does at most every ``scan_every_s`` (a read of 500 entries on every request was ~0.2 ms of each)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from simulator.background import ResponseStore


@dataclass
class Entry:
    id: str
    nbytes: int = 0
    finished_at: float | None = None
    created: float = 0.0
    task: None = None

    def __post_init__(self) -> None:
        self.created = time.monotonic()


def test_the_count_is_held_on_every_add_oldest_first():
    store = ResponseStore(max_entries=3, scan_every_s=3600)
    for i in range(5):
        store.add(Entry(str(i)))
    assert len(store) == 3 and [store.get(str(i)) is None for i in range(5)] == [True, True, False, False, False]


def test_ended_responses_are_forgotten_after_their_ttl_when_the_store_reads_its_entries():
    store = ResponseStore(ttl_s=0.05, scan_every_s=0)
    store.add(Entry("ended", finished_at=time.monotonic()))
    store.add(Entry("running"))
    time.sleep(0.1)
    assert store.get("ended") is None and store.get("running") is not None


def test_ages_and_bytes_are_read_at_most_every_scan_interval():
    store = ResponseStore(ttl_s=0.05, max_bytes=100, scan_every_s=3600)
    store.add(Entry("ended", finished_at=time.monotonic()))  # the first add reads every entry
    store.add(Entry("big", nbytes=500))
    time.sleep(0.1)
    assert store.get("ended") is not None and store.get("big") is not None  # not read again yet
    store.scan_every_s = 0
    assert store.get("ended") is None and store.get("big") is None and len(store) == 0
