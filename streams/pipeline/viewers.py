"""The viewers of each run in this process, and the run's messages handed to them directly.

Through the channel layer, each viewer's copy of each batch was a message of its own: a queue put,
a fresh receive task and Channels' ``asyncio.wait`` loop (``await_many_dispatch``) per viewer per
batch, and in the in-memory layer a task per channel per ``group_send`` too: ~160 µs of CPU per
viewer per batch with 1,000 viewers, which is most of what a run's flush costs when runs are
many and slow (docs/performance.md). Here a run's viewers in this process are one registry entry,
and a message reaches each of them as a method call (:meth:`Viewer.offer`):

- the in-memory layer (embedded: the runs and their viewers share the process) is passed by: the
  publisher hands each message to the run's viewers here (streams.pipeline.broadcast), and still
  sends it to the layer's group for anything else listening there (``manage.py stream``, tests);
- any other layer (Redis) reaches every process: one channel of this registry joins the group of
  each run that has a viewer here, and one loop hands each message it receives to that run's
  viewers.

Delivery stays at most once, as through any layer: a viewer drops live batches it cannot queue
and refills the gap from the store (dashboard/consumers.py), which has every event first.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import weakref
from collections.abc import Callable
from typing import Any, Protocol

from channels.layers import InMemoryChannelLayer, get_channel_layer

log = logging.getLogger(__name__)

RETRY_S = 1.0  # a failed receive (Redis gone) is retried after this long


def group_name(run_id: int) -> str:
    return f"run.{run_id}"


class Viewer(Protocol):
    def offer(self, message: dict[str, Any]) -> None:
        """Take one of the run's messages (``run.events``, ``run.status``, ``run.flag``); must not block."""


class LocalViewers:
    """Per event loop and layer: run id -> the viewers in this process (see the module's docstring)."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.local = isinstance(layer, InMemoryChannelLayer)
        self.runs: dict[int, dict[Viewer, None]] = {}  # an ordered set per run
        self.channel: str | None = None
        self._membership: dict[int, asyncio.Task] = {}  # the latest group_add/discard of a run, while in flight
        self._listener: asyncio.Task | None = None
        # The first joins of several runs at once must make one channel between them, not one each.
        self._making_channel = asyncio.Lock()

    async def join(self, run_id: int, viewer: Viewer) -> None:
        """Returns once the viewer gets every message published from now on (its backlog can be read)."""
        viewers = self.runs.get(run_id)
        if viewers is None:
            viewers = self.runs[run_id] = {}
            if not self.local:
                self._change(run_id, add=True)
        viewers[viewer] = None
        pending = self._membership.get(run_id)
        if pending is not None:
            try:
                await asyncio.shield(pending)
            except BaseException:  # cancelled too: a viewer that never joined must not stay listed
                self.leave(run_id, viewer)
                raise

    def leave(self, run_id: int, viewer: Viewer) -> None:
        viewers = self.runs.get(run_id)
        if viewers is None:
            return
        viewers.pop(viewer, None)
        if not viewers:
            del self.runs[run_id]
            if not self.local:
                self._change(run_id, add=False)

    def deliver(self, message: dict[str, Any]) -> None:
        """Hand a run's message to each of its viewers here."""
        viewers = self.runs.get(message.get("run"))  # type: ignore[arg-type]
        if not viewers:
            return
        for viewer in list(viewers):
            try:
                viewer.offer(message)
            except Exception:  # one broken viewer must not cost the others their batch
                log.exception("run %s: a viewer failed to take a message", message.get("run"))

    # --- group membership and the receive loop (layers that reach other processes) ---------

    def _change(self, run_id: int, add: bool) -> None:
        previous = self._membership.get(run_id)
        task = asyncio.get_running_loop().create_task(self._apply(run_id, add, previous),
                                                      name=f"streamscope-viewers-{run_id}",
                                                      context=contextvars.Context())
        self._membership[run_id] = task
        task.add_done_callback(lambda done: self._settled(run_id, done))

    def _settled(self, run_id: int, task: asyncio.Task) -> None:
        if self._membership.get(run_id) is task:
            del self._membership[run_id]
        if not task.cancelled() and task.exception() is not None:  # its joiners were told; said here once
            log.warning("run %s: joining or leaving its group failed: %r", run_id, task.exception())

    async def _apply(self, run_id: int, add: bool, previous: asyncio.Task | None) -> None:
        if previous is not None:
            await asyncio.wait([previous])  # in order, whatever the previous one ended with
        if add:
            async with self._making_channel:
                # First joins of several runs at once each making a channel joined some runs' groups
                # with channels nobody listened to: their viewers got nothing live (only the store's
                # events at the run's end: bench/concurrency.py --mode scaled's ~22 s maximum).
                if self.channel is None:
                    self.channel = await self.layer.new_channel()
            if self._listener is None or self._listener.done():
                self._listener = asyncio.get_running_loop().create_task(
                    self._listen(), name="streamscope-viewers-listener", context=contextvars.Context())
            await self.layer.group_add(group_name(run_id), self.channel)
        elif self.channel is not None:
            await self.layer.group_discard(group_name(run_id), self.channel)

    async def _listen(self) -> None:
        await listen(self.layer, self.channel, self.deliver, "viewers")


async def listen(layer: Any, channel: str, deliver: Callable[[dict], object], who: str) -> None:
    """Every message of ``channel`` to ``deliver``, for as long as this runs; when the layer fails
    (its server went away) it is asked again after RETRY_S, so listening goes on once it is back."""
    while True:
        try:
            message = await layer.receive(channel)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("%s: receiving from the channel layer failed: %r", who, exc)
            await asyncio.sleep(RETRY_S)
            continue
        deliver(message)


# Per event loop, per layer object (tests swap layers).
_registries: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, LocalViewers]] = (
    weakref.WeakKeyDictionary()
)


def local_viewers(layer: Any = None) -> LocalViewers:
    """The registry of the running event loop for ``layer`` (default: the default channel layer)."""
    layer = layer if layer is not None else get_channel_layer()
    per_loop = _registries.setdefault(asyncio.get_running_loop(), {})
    registry = per_loop.get(id(layer))
    if registry is None or registry.layer is not layer:
        registry = per_loop[id(layer)] = LocalViewers(layer)
    return registry
