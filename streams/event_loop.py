"""Which asyncio event loop a Streamscope process runs on: asyncio's own unless
``STREAMSCOPE_EVENT_LOOP`` asks for uvloop (not a dependency: measured end to end without a gain,
docs/decisions.md; the switch is kept so the comparison is one variable away, docs/operations.md).
``STREAMSCOPE_WAKEUP_WINDOW_MS`` gives asyncio's loop a selector that coalesces wake-ups while busy
(:mod:`streams.wakeups`; off by default).

Used by the processes' entry points before they make a loop: Daphne's launcher
(:mod:`dashboard.serve`) and ``manage.py streamworker``. Standard library only, so it can run before
Django or Twisted is imported. (The simulator, an app of its own, passes the same choice to uvicorn.)
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping

ENV = "STREAMSCOPE_EVENT_LOOP"
WINDOW_ENV = "STREAMSCOPE_WAKEUP_WINDOW_MS"
# A longer window would move every read, and the arrival time recorded with it, by more than the
# simulator's clock tick and a viewer's frame rhythm can hide; 0 (the default) is off.
MAX_WINDOW_MS = 5.0
# "asyncio" (the default): asyncio's loop; "uvloop": uvloop or an error; "auto": uvloop when it can be imported.
CHOICES = ("auto", "uvloop", "asyncio")


class EventLoopChoiceError(RuntimeError):
    """``STREAMSCOPE_EVENT_LOOP`` asks for something this process cannot run."""


def uvloop_available() -> bool:
    # uvloop has no Windows build; where its wheel is missing the import fails and asyncio's loop is used.
    return sys.platform != "win32" and importlib.util.find_spec("uvloop") is not None


def chosen_loop(environ: Mapping[str, str] = os.environ) -> str:
    """``"uvloop"`` or ``"asyncio"``, from ``STREAMSCOPE_EVENT_LOOP`` (default ``asyncio``)."""
    wanted = environ.get(ENV, "").strip().lower() or "asyncio"
    if wanted not in CHOICES:
        raise EventLoopChoiceError(f"{ENV}={wanted!r}: use one of {', '.join(CHOICES)}")
    if wanted == "asyncio":
        return "asyncio"
    if uvloop_available():
        return "uvloop"
    if wanted == "uvloop":
        raise EventLoopChoiceError(f"{ENV}=uvloop but uvloop is not installed here (pip install uvloop, "
                                   f"or set {ENV}=asyncio)")
    return "asyncio"


def wakeup_window_s(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds of ``STREAMSCOPE_WAKEUP_WINDOW_MS`` (0: off, the default)."""
    raw = environ.get(WINDOW_ENV, "").strip() or "0"
    try:
        window_ms = float(raw)
    except ValueError:
        window_ms = -1.0
    if not 0 <= window_ms <= MAX_WINDOW_MS:
        raise EventLoopChoiceError(f"{WINDOW_ENV}={raw!r}: use milliseconds from 0 (off) to {MAX_WINDOW_MS:g}")
    return window_ms / 1000


def loop_factory(name: str, environ: Mapping[str, str] = os.environ) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of the kind :func:`chosen_loop` named (with the wake-up window
    of ``STREAMSCOPE_WAKEUP_WINDOW_MS`` on asyncio's loop)."""
    window_s = wakeup_window_s(environ)
    if name == "uvloop":
        if window_s:
            raise EventLoopChoiceError(f"{WINDOW_ENV} needs asyncio's loop (uvloop has no selector to give it)")
        import uvloop

        return uvloop.new_event_loop
    if window_s:
        from streams.wakeups import CoalescingEpollSelector

        return lambda: asyncio.SelectorEventLoop(CoalescingEpollSelector(window_s))
    return asyncio.SelectorEventLoop


class _FactoryPolicy(asyncio.DefaultEventLoopPolicy):
    """asyncio's default policy, making its new loops with ``factory``."""

    def __init__(self, factory: Callable[[], asyncio.AbstractEventLoop]) -> None:
        super().__init__()
        self._factory = factory

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._factory()


def use_chosen_loop(environ: Mapping[str, str] = os.environ) -> str:
    """Make every loop this process creates from now on (``asyncio.new_event_loop()``, as Daphne's
    reactor set-up calls it) the chosen kind; returns its name."""
    name = chosen_loop(environ)
    factory = loop_factory(name, environ)
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    elif factory is asyncio.SelectorEventLoop:
        asyncio.set_event_loop_policy(None)  # asyncio's default policy
    else:
        asyncio.set_event_loop_policy(_FactoryPolicy(factory))
    return name


def running_loop_name() -> str:
    """What the running loop is (``"uvloop"``, ``"asyncio"``, or its class's module), as logged at start."""
    module = type(asyncio.get_running_loop()).__module__
    if module.startswith("uvloop"):
        return "uvloop"
    if module.startswith("asyncio"):
        return "asyncio"
    return module
