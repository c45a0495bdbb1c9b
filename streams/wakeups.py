"""Fewer event-loop wake-ups under load: a selector that, while sockets keep becoming ready faster
than a short window, waits that window before polling, so one wake-up serves every socket that
became ready meanwhile. Idle or lightly loaded it polls exactly as asyncio's own selector does.

Off unless ``STREAMSCOPE_WAKEUP_WINDOW_MS`` is set (streams/event_loop.py; docs/operations.md).
Every wake-up of a thread that slept in ``epoll_wait`` is a context switch, on a virtual machine
often an interrupt to another virtual CPU and an exit to the hypervisor: 10-40 µs each on the
benchmark machine (docs/performance.md). A process reading hundreds of streams whose events arrive
each at its own time wakes for most of them; with the window it wakes at most once per window.
What it costs: a read happens up to one window later than it could have, so its arrival time, which
is taken when it is read, moves by as much. Standard library only: it runs before Django is imported.
"""

from __future__ import annotations

import selectors
import time

# Wake-ups in a row that each came within the window before the selector starts waiting it out:
# a few quick wake-ups (one request and its upstream's answer) are served at once as before.
BUSY_AFTER = 8


class CoalescingEpollSelector(selectors.EpollSelector):
    """``selectors.EpollSelector`` that sleeps up to ``window_s`` before polling while busy.

    Busy: the last ``busy_after`` polls that could block each returned ready sockets less than
    ``window_s`` after they began. While busy, a poll that could block returns what is ready at
    once; with nothing ready it sleeps the window, or less when the loop's next timer is due sooner
    (the timeout asyncio passes), then polls for what is left of the timeout: a socket that became
    ready meanwhile is served at once, and nothing waits past a due timer. A poll that cannot block
    (timeout 0: callbacks are waiting to run) never sleeps and leaves the state as it is. A poll that
    blocks for a window or longer, or until its timeout with nothing ready, ends the busy state.
    """

    def __init__(self, window_s: float, busy_after: int = BUSY_AFTER) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, not {window_s!r}")
        super().__init__()
        self.window_s = window_s
        self.busy_after = busy_after
        self.quick = 0  # polls in a row that found ready sockets within the window
        self.pauses = 0  # windows waited out, for the tests and for a look from a debugger

    @property
    def busy(self) -> bool:
        return self.quick >= self.busy_after

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is not None and timeout <= 0:
            return super().select(timeout)
        if self.quick >= self.busy_after:
            ready = super().select(0)
            if ready:  # already there: taking it needs no wake-up, and a pause would only idle the loop
                return ready
            pause = self.window_s if timeout is None else min(self.window_s, timeout)
            time.sleep(pause)
            self.pauses += 1
            if timeout is not None:
                timeout = max(0.0, timeout - pause)
        began = time.monotonic()
        ready = super().select(timeout)
        if ready:
            quick = time.monotonic() - began < self.window_s
            self.quick = min(self.quick + 1, self.busy_after) if quick else 0
        elif timeout != 0:  # blocked until the timer with nothing ready: idle (0: the pause took it all)
            self.quick = 0
        return ready
