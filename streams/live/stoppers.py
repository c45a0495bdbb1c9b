"""Runs streamed by something other than a launcher (the gateway) register how to stop them here,
so the dashboard's Stop (streams.live.control.cancel_run) reaches them in this process."""

from __future__ import annotations

from collections.abc import Callable

_stoppers: dict[int, Callable[[str], None]] = {}


def register(run_id: int, stop: Callable[[str], None]) -> None:
    """``stop(reason)`` must end the run soon and return at once (it is called from a view)."""
    _stoppers[run_id] = stop


def unregister(run_id: int) -> None:
    _stoppers.pop(run_id, None)


def stop_here(run_id: int, reason: str) -> bool:
    """Stop the run if this process streams it; False when it does not."""
    stop = _stoppers.get(run_id)
    if stop is None:
        return False
    stop(reason)
    return True
