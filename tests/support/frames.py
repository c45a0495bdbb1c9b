"""Decoded SSE frames for feeding a RunRecorder in tests."""

import json

from streams.protocol.sse import SSEFrame


def frame(payload: dict | str, event: str = "") -> SSEFrame:
    """A frame whose data is ``payload`` (a dict as JSON, a string as it is)."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return SSEFrame(event=event, data=data, id=None, nbytes=len(data))


def delta(seq: int) -> SSEFrame:
    """A text delta numbered ``seq`` whose text is ``f"w{seq} "``."""
    return frame({"type": "response.output_text.delta", "sequence_number": seq, "delta": f"w{seq} "})
