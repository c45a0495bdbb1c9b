"""Which asyncio event loop a Streamscope process runs on: asyncio's own unless
``STREAMSCOPE_EVENT_LOOP`` asks for uvloop (not a dependency: measured end to end without a gain,
docs/decisions.md; the switch is kept so the comparison is one variable away, docs/operations.md).

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


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    """A function making a new loop of the kind :func:`chosen_loop` named."""
    if name == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.SelectorEventLoop


def use_chosen_loop(environ: Mapping[str, str] = os.environ) -> str:
    """Make every loop this process creates from now on (``asyncio.new_event_loop()``, as Daphne's
    reactor set-up calls it) the chosen kind; returns its name."""
    name = chosen_loop(environ)
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(None)  # asyncio's default policy
    return name


def running_loop_name() -> str:
    """What the running loop is (``"uvloop"``, ``"asyncio"``, or its class's module), as logged at start."""
    module = type(asyncio.get_running_loop()).__module__
    if module.startswith("uvloop"):
        return "uvloop"
    if module.startswith("asyncio"):
        return "asyncio"
    return module
