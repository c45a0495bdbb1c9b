"""The serving process's garbage collector: its thresholds, and what its collections cost.

``STREAMSCOPE_GC_THRESHOLD`` ("700,10,10", Python's own default) sets ``gc.set_threshold``.
``STREAMSCOPE_GC_LOG`` names a JSON file that gets, every couple of seconds, each generation's
collections, their total and longest pause, and every pause of 10 ms or more with its wall-clock
time: how benchmarks (bench/many.py) tell collections apart from other causes of a delay.
"""

from __future__ import annotations

import gc
import json
import os
import time
from pathlib import Path
from typing import Any

SLOW_PAUSE_S = 0.010  # pauses this long or longer are listed one by one
SLOW_PAUSES_KEPT = 5000
WRITE_EVERY_S = 2.0


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
            {"collections": 0, "total_ms": 0.0, "max_ms": 0.0, "collected": 0} for _ in range(3)
        ]
        self.slow: list[tuple[float, int, float, int]] = []  # (wall-clock start, generation, ms, objects tracked)
        self._started = 0.0
        self._written = time.monotonic()

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        pause = time.perf_counter() - self._started
        figures = self.generations[info["generation"]]
        figures["collections"] += 1
        figures["total_ms"] += pause * 1000.0
        figures["max_ms"] = max(figures["max_ms"], pause * 1000.0)
        figures["collected"] += info["collected"]
        if pause >= SLOW_PAUSE_S and len(self.slow) < SLOW_PAUSES_KEPT:
            self.slow.append((time.time() - pause, info["generation"], round(pause * 1000.0, 2),
                              len(gc.get_objects(info["generation"]))))
        now = time.monotonic()
        if now - self._written >= WRITE_EVERY_S:
            self._written = now
            self.write()

    def write(self) -> None:
        report = {"pid": os.getpid(), "threshold": gc.get_threshold(), "frozen": gc.get_freeze_count(),
                  "generations": self.generations, "slow": self.slow}
        partial = self.path.with_name(self.path.name + ".tmp")
        partial.write_text(json.dumps(report))
        partial.replace(self.path)


def configure(threshold: str = "", log_path: str = "") -> PauseLog | None:
    """Apply ``STREAMSCOPE_GC_THRESHOLD`` and ``STREAMSCOPE_GC_LOG`` (each ignored when empty)."""
    if threshold:
        gc.set_threshold(*parse_threshold(threshold))
    if not log_path:
        return None
    log = PauseLog(Path(log_path))
    gc.callbacks.append(log)
    return log
