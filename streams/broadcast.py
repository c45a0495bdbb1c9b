"""Publishing a run's events and status to the channel-layer group its viewers join.

Publishing is at-most-once (channel layers drop messages for full channels), so the database
is written first and viewers refill any gap from it: see dashboard/consumers.py.
"""

from __future__ import annotations

from typing import Any

from channels.layers import get_channel_layer


def group_name(run_id: int) -> str:
    return f"run.{run_id}"


async def publish_events(run_id: int, first_seq: int, encoded_events: list[str]) -> None:
    """One message carries a whole batch; consumers splice it into a frame without re-encoding."""
    if not encoded_events:
        return
    layer = get_channel_layer()
    await layer.group_send(
        group_name(run_id),
        {"type": "run.events", "first": first_seq, "events": encoded_events},
    )


async def publish_status(run_id: int, status: str, metrics: dict[str, Any], error: Any = None,
                         last_seq: int = -1, extra: dict[str, Any] | None = None) -> None:
    layer = get_channel_layer()
    message = {
        "type": "run.status",
        "status": status,
        "metrics": metrics,
        "error": error,
        "last_seq": last_seq,
    }
    if extra:
        message.update(extra)
    await layer.group_send(group_name(run_id), message)
