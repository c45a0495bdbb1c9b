"""One object per running event loop, made on first use.

The pipeline's process-wide helpers (the flush clock, the group writer, the viewers' session watch,
the gateway's pooled client) hold futures, tasks and connections bound to one event loop; tests and
management commands run several loops in one process, so each loop gets its own, forgotten with
the loop."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerLoop(Generic[T]):
    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()

    def get(self) -> T:
        """The running loop's object (made now if it has none yet)."""
        loop = asyncio.get_running_loop()
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._make()
        return value
