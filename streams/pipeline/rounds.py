"""Work that goes out in rounds: an item submitted while a round is in flight waits, and the next
round takes every item that arrived meanwhile. No delay when idle, one round trip per round when
busy. streams.pipeline.store.GroupWriter (one transaction for many runs' batches) and
streams.pipeline.broadcast.GroupPublisher (one publish round for them) are the two users.
"""

from __future__ import annotations

import asyncio
import contextvars
from typing import Generic, TypeVar

Item = TypeVar("Item")


class Rounds(Generic[Item]):
    #: the drain task's name, for debugging
    task_name = "streamscope-rounds"

    def __init__(self) -> None:
        self._pending: list[tuple[Item, asyncio.Future]] = []
        self._task: asyncio.Task | None = None

    async def submit(self, item: Item) -> None:
        """Returns when the item's round is done; raises what its round raised for it."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        self._pending.append((item, done))
        if self._task is None or self._task.done():
            # A context of its own: the first submitter may belong to a request whose context
            # dies with it (see streams.live.launcher).
            self._task = loop.create_task(self._drain(), name=self.task_name, context=contextvars.Context())
        await done

    async def send_round(self, items: list[Item]) -> list[BaseException | None]:
        """Send one round; one result per item: None, or the error that item failed with."""
        raise NotImplementedError

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                results = await self.send_round([item for item, _ in group])
            except Exception as exc:
                results = [exc] * len(group)
            for (_, done), error in zip(group, results):
                if done.done():  # its submitter was cancelled meanwhile; the round happened anyway
                    continue
                if error is None:
                    done.set_result(None)
                else:
                    done.set_exception(error)
