"""Writing the ends of runs: the final row fields (status, metrics, the whole output text...) of
every run ending at about the same time, in one transaction, in statements of ROWS_PER_STATEMENT runs.

A run's end is written after its last events are stored and published (streams/live/recorder.py,
``RunRecorder._finish``), not in their transaction: an end is the costliest row write of a run
(PostgreSQL recomputes the run's search vector from its whole output text and updates every index of
the row: ~1-2.5 ms each), and 1,000 runs ending in the same second made every run's last events wait
for all those ends, and for one ORM UPDATE per run (~0.8 ms of the database thread's CPU each;
docs/performance.md, issue 14 target 5 in scaled mode).

On PostgreSQL the ends go on a thread and connection of their own, so the batches of the runs still
streaming (on the database thread, streams/pipeline/store.py) do not queue behind them; SQLite has
one writer, so there they take the database thread like every other write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from channels.db import database_sync_to_async
from django.db import connection, transaction

from streams.pipeline import checkpoints, store
from streams.pipeline.per_loop import PerLoop
from streams.pipeline.rounds import Rounds

End = tuple[int, dict[str, Any]]  # (run_id, the row's fields)
# Runs per statement: an end carries its run's whole output text, and one statement of 1,000 ends
# (~7 MB of SQL at 1,200 words each) left ~12 MiB more in the writing thread's heap than statements
# of 64 (+0.6 MiB; 12 KiB per run against the 200 KiB of bench/many.py's target 5).
ROWS_PER_STATEMENT = 64


def end_runs(ends: Sequence[End]) -> None:
    """Write every run's fields in one transaction: an UPDATE per set of columns (runs ending together
    have the same) and ROWS_PER_STATEMENT runs, a run named twice getting its fields merged in order
    (the later value wins), as the flushes' rows are written (store.update_runs)."""
    with transaction.atomic():
        store.update_runs(ends, any_fields=True, rows_per_statement=ROWS_PER_STATEMENT)


def _writes_apart() -> bool:
    return connection.vendor == "postgresql"


class EndWriter(Rounds[End]):
    """The ends of the runs on one event loop: an end waits while a round is in flight, and the next
    round takes every end that arrived meanwhile (as store.GroupWriter does for batches)."""

    task_name = "streamscope-end-writer"

    async def send_round(self, items: list[End]) -> list[BaseException | None]:
        write = database_sync_to_async(end_runs, thread_sensitive=not _writes_apart())
        # An end rewrites its run's whole text (and, on SQLite, its search index): counted as rows of
        # log for the database thread's checkpoint, which waits for a lull in writes (checkpoints.py).
        with checkpoints.wrote(sum(_log_rows(fields) for _, fields in items)):
            try:
                await write(items)
                return [None] * len(items)
            except Exception:
                pass
            return await store.each_on_its_own(items, lambda item: write([item]))


def _log_rows(fields: dict[str, Any]) -> int:
    """An end's share of the log, in stored events' worth (checkpoints.DUE_ROWS): its text once, and
    its search index's entries for it (~twice the text), so three times the text's length."""
    text = fields.get("output_text")
    return 1 + (3 * len(text) // checkpoints.ROW_BYTES if isinstance(text, str) else 0)


_writers = PerLoop(EndWriter)


async def write_end(run_id: int, fields: dict[str, Any]) -> None:
    """Write a run's end on its row; committed when this returns, grouped with other runs' ends."""
    await _writers.get().submit((run_id, fields))
