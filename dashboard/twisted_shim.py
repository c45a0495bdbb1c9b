"""The one place Streamscope reads Twisted's private state: how many bytes a viewer's TCP transport
still holds unsent (``dataBuffer``, ``offset`` and the private ``_tempDataLen`` of
``twisted.internet.abstract.FileDescriptor``). It is what lets a slow viewer be detected and
bounded instead of buffering without limit in Daphne. Twisted is pinned to the minor version this
was written against (pyproject.toml); ``tests/dashboard/test_shims.py`` fails loudly if the
attributes change.
"""

from __future__ import annotations

import functools
from typing import Any


def transport_of(send: Any) -> Any | None:
    """Daphne's Twisted transport behind an ASGI ``send`` (``partial(server.handle_reply,
    protocol)``, possibly wrapped by Channels' session middleware), or None under another server
    or a test communicator: then nothing is bounded."""
    for _ in range(4):
        if isinstance(send, functools.partial) and send.args:
            transport = getattr(send.args[0], "transport", None)
            if hasattr(transport, "dataBuffer") and hasattr(transport, "_tempDataLen"):
                return transport
            return None
        send = getattr(getattr(send, "__self__", None), "real_send", None)  # InstanceSessionWrapper
    return None


def unsent_bytes(transport: Any) -> int:
    """Bytes written to a Twisted TCP transport that the kernel has not accepted yet."""
    return len(transport.dataBuffer) - transport.offset + transport._tempDataLen
