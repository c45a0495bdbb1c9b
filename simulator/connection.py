"""Cut a client's TCP connection mid-response, to simulate an upstream that drops.

ASGI has no message for "abort this response": an exception raised after the response has
started does not reliably drop the connection (under Daphne it ends up in its application
checker, which tries to send a 500 on a started response). So we find the socket itself: the
connection whose peer is the ASGI scope's ``client`` and whose local address is its
``server``, and shut it down. The client then sees the chunked body end without its final
chunk (httpx: ``RemoteProtocolError: incomplete chunked read``), exactly like a real drop;
the server notices the closed socket and cleans up as for any disconnect.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator, Mapping
from typing import Any


class ConnectionNotFound(RuntimeError):
    """The request's socket could not be found (no client address, or not a real socket)."""


def _open_fds() -> Iterator[int]:
    for directory in ("/proc/self/fd", "/dev/fd"):
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        for name in names:
            if name.isdigit():
                yield int(name)
        return


def _matches(sock: socket.socket, client: tuple[str, int], server: tuple[str, int] | None) -> bool:
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return False
    if not isinstance(peer, tuple) or tuple(peer[:2]) != client:
        return False
    return server is None or tuple(local[:2]) == server


def drop_connection(scope: Mapping[str, Any]) -> None:
    """Shut down the socket serving ``scope``; raises :class:`ConnectionNotFound` if none matches."""
    client = scope.get("client")
    if not client:
        raise ConnectionNotFound("the ASGI scope has no client address")
    client_address = (str(client[0]), int(client[1]))
    server = scope.get("server")
    server_address = (str(server[0]), int(server[1])) if server else None
    for fd in _open_fds():
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            sock = socket.socket(fileno=fd)
        except OSError:
            continue
        try:
            if _matches(sock, client_address, server_address):
                sock.shutdown(socket.SHUT_RDWR)
                return
        except OSError:
            continue
        finally:
            # The server owns the descriptor: never close it from here.
            sock.detach()
    raise ConnectionNotFound(f"no socket connected to {client_address[0]}:{client_address[1]}")
