"""The serving process's garbage collector: its thresholds, and what its collections cost; and its
malloc arenas (``STREAMSCOPE_MALLOC_ARENAS``, :func:`limit_malloc_arenas`).

``STREAMSCOPE_GC_THRESHOLD`` (dashboard/settings.py: "10000,10,10" by default; empty keeps Python's
700,10,10) sets ``gc.set_threshold``.
``STREAMSCOPE_GC_LOG`` names a JSON file that gets, every couple of seconds, each generation's
collections, their total and longest pause (wall clock), the CPU they used, and every pause of
10 ms or more with its wall-clock time: how benchmarks (bench/many.py) tell collections apart
from other causes of a delay. Each write also samples the process's RSS and glibc's heap
(``malloc_info``: in use, free in arenas, mapped; the main arena's part apart) and SQLite's own
heap, so a benchmark can split the RSS at its peak into Python's, SQLite's and the allocator's
share, and tell the event loop's arena from the other threads'.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SLOW_PAUSE_S = 0.010  # pauses this long or longer are listed one by one
SLOW_PAUSES_KEPT = 5000
WRITE_EVERY_S = 2.0
MEMORY_SAMPLES_KEPT = 2000


def memory_sample() -> dict[str, float]:
    """RSS and glibc's heap figures in KiB (``glibc_*`` absent where the C library is not glibc)."""
    sample: dict[str, float] = {"at": time.time()}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sample["rss_kib"] = float(line.split()[1])
    except OSError:
        pass
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return sample
    heap = glibc_heap(libc)
    if heap is not None:
        sample.update({f"glibc_{name}_kib": value / 1024 for name, value in heap.items()})
    try:
        sqlite = ctypes.CDLL("libsqlite3.so.0")  # the library _sqlite3 is linked to: the same counters
        sqlite.sqlite3_memory_used.restype = ctypes.c_int64
        sample["sqlite_kib"] = sqlite.sqlite3_memory_used() / 1024
    except (OSError, AttributeError):
        pass
    return sample


_MAIN_HEAP = re.compile(r'<heap nr="0">(.*?)</heap>', re.S)
_SYSTEM = re.compile(r'<system type="current" size="(\d+)"')
_FREE = re.compile(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"')
_MAPPED = re.compile(r'<total type="mmap" count="\d+" size="(\d+)"')


def glibc_heap(libc: ctypes.CDLL) -> dict[str, int] | None:
    """glibc's heap in bytes, from one ``malloc_info`` (each read walks every free chunk of every
    arena under its lock, so one read, not ``mallinfo2`` and this): ``arenas`` held from the
    system, ``free`` in them, ``in_use``, ``mapped`` (large blocks mapped on their own), and the
    main arena's (the event loop thread's) ``main_arena`` and ``main_free``; the rest are other
    threads' arenas (the database thread, request threads). None where it cannot be read."""
    try:
        libc.open_memstream.restype = ctypes.c_void_p
        text_at, size = ctypes.c_void_p(), ctypes.c_size_t()
        stream = libc.open_memstream(ctypes.byref(text_at), ctypes.byref(size))
        if not stream:
            return None
        libc.malloc_info(0, ctypes.c_void_p(stream))
        libc.fclose(ctypes.c_void_p(stream))
        text = ctypes.string_at(text_at, size.value).decode()
        libc.free(text_at)
    except (AttributeError, OSError, UnicodeDecodeError):
        return None
    main = _MAIN_HEAP.search(text)
    main_text = main.group(1) if main else ""
    tail = text[text.rfind("</heap>"):]  # the totals over every arena
    main_system, system, mapped = _SYSTEM.search(main_text), _SYSTEM.search(tail), _MAPPED.search(tail)
    if main_system is None or system is None or mapped is None:
        return None
    free = sum(map(int, _FREE.findall(tail)))
    return {"arenas": int(system.group(1)), "free": free, "in_use": int(system.group(1)) - free,
            "mapped": int(mapped.group(1)), "main_arena": int(main_system.group(1)),
            "main_free": sum(map(int, _FREE.findall(main_text)))}


def parse_threshold(text: str) -> tuple[int, ...]:
    """``"700,10,10"`` → ``(700, 10, 10)``; one to three non-negative integers."""
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not 1 <= len(values) <= 3 or any(value < 0 for value in values):
        raise ValueError(f"STREAMSCOPE_GC_THRESHOLD must be one to three non-negative integers, not {text!r}")
    return values


class PauseLog:
    """A ``gc.callbacks`` entry that counts collections and writes their summary to ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.generations: list[dict[str, float]] = [
            {"collections": 0, "total_ms": 0.0, "cpu_ms": 0.0, "max_ms": 0.0, "collected": 0} for _ in range(3)
        ]
        self.slow: list[tuple[float, int, float, int]] = []  # (wall-clock start, generation, ms, objects collected)
        self.memory: list[dict[str, float]] = []
        self._frozen = 0
        self._started = 0.0
        self._started_cpu = 0.0
        self._written = time.monotonic()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started, self._started_cpu = time.perf_counter(), time.thread_time()
            return
        pause = time.perf_counter() - self._started
        figures = self.generations[info["generation"]]
        figures["collections"] += 1
        figures["total_ms"] += pause * 1000.0
        # A pause is wall-clock time; on a busy machine part of it is waiting for a core.
        figures["cpu_ms"] += (time.thread_time() - self._started_cpu) * 1000.0
        figures["max_ms"] = max(figures["max_ms"], pause * 1000.0)
        figures["collected"] += info["collected"]
        if pause >= SLOW_PAUSE_S and len(self.slow) < SLOW_PAUSES_KEPT:
            self.slow.append((time.time() - pause, info["generation"], round(pause * 1000.0, 2), info["collected"]))
        now = time.monotonic()
        if now - self._written >= WRITE_EVERY_S:
            self._written = now
            self.write()

    def write(self) -> None:
        if len(self.memory) < MEMORY_SAMPLES_KEPT:
            self.memory.append(memory_sample())
        if not self._frozen:
            # It walks every frozen object (~10^5): read once the process has frozen them, not every write.
            self._frozen = gc.get_freeze_count()
        report = {"pid": os.getpid(), "threshold": gc.get_threshold(), "frozen": self._frozen,
                  "generations": self.generations, "slow": self.slow, "memory": self.memory}
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps(report))
        partial.replace(self.path)


M_ARENA_MAX = -8  # glibc's mallopt parameter (malloc.h)


def limit_malloc_arenas(count: str, environ: Mapping[str, str] = os.environ) -> bool:
    """``STREAMSCOPE_MALLOC_ARENAS``: at most ``count`` glibc malloc arenas in this process; True when
    applied. Nothing is applied when it is empty, when the process's environment already tells glibc
    (``MALLOC_ARENA_MAX``, or ``arena_max`` in ``GLIBC_TUNABLES``: the operator's choice wins), or where
    the C library is not glibc. Called as the settings load (dashboard/settings.py), before the process
    starts its threads: a thread that already has an arena keeps it.

    With its default (up to 8 per core) glibc gave the database thread an arena of its own, and the
    memory freed in each arena (SQLite's statements and copies of bound values there, the event loop's
    large strings here) served that arena alone: at the end of bench/many.py's 1,000 runs ~85 KiB per
    run was free memory glibc held, 29 of it in the other threads' arena. One arena shares what is freed
    (docs/performance.md, eleventh session)."""
    if not count.strip():
        return False
    try:
        arenas = int(count)
    except ValueError:
        arenas = 0
    if not 1 <= arenas <= 2**31 - 1:
        raise ValueError(f"STREAMSCOPE_MALLOC_ARENAS must be a whole number from 1 (or empty), not {count!r}")
    if "MALLOC_ARENA_MAX" in environ or "arena_max" in environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False


def configure(threshold: str = "", log_path: str = "") -> PauseLog | None:
    """Apply ``STREAMSCOPE_GC_THRESHOLD`` and ``STREAMSCOPE_GC_LOG`` (each ignored when empty)."""
    if threshold:
        gc.set_threshold(*parse_threshold(threshold))
    if not log_path:
        return None
    log = PauseLog(Path(log_path))
    gc.callbacks.append(log)
    return log
