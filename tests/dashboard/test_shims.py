"""Twisted's private transport state, which dashboard/twisted_shim.py reads to bound slow viewers:
fail loudly if a Twisted upgrade renames it (the bound would silently stop working)."""

import socket

from twisted.internet import abstract, tcp

from dashboard.twisted_shim import send_at_once, unsent_bytes
from tests.support.twisted_reactor import Reactor


def test_a_twisted_transport_still_counts_unsent_bytes_where_the_shim_reads_them():
    transport = abstract.FileDescriptor()
    for name in ("dataBuffer", "offset", "_tempDataLen"):
        assert hasattr(transport, name), f"twisted FileDescriptor lost {name}: dashboard/twisted_shim.py"
    transport._tempDataLen = 5
    transport.dataBuffer = b"abc"
    transport.offset = 1
    assert unsent_bytes(transport) == 7


def connected_transport():
    """(Twisted's TCP transport on one end of a socket pair, the other end, the stand-in reactor)."""
    ours, theirs = socket.socketpair()
    reactor = Reactor()
    transport = tcp.Connection(ours, protocol=None, reactor=reactor)
    transport.connected = True
    return transport, theirs, reactor


def test_frames_go_to_the_socket_at_once_and_what_it_cannot_take_waits_in_order():
    transport, theirs, reactor = connected_transport()
    assert send_at_once(transport)
    transport.write(b"hello")
    assert theirs.recv(100) == b"hello" and not reactor.writers  # sent, no reactor round
    big = b"x" * 8_000_000  # more than the socket takes at once
    transport.write(big)
    assert unsent_bytes(transport) > 0 and reactor.writers == {transport}
    transport.write(b"tail")  # behind what waits: buffered, never sent ahead of it
    received = bytearray()
    theirs.setblocking(False)
    while len(received) < len(big) + 4:
        try:
            received += theirs.recv(1 << 20)
        except BlockingIOError:
            transport.doWrite()
    assert bytes(received) == big + b"tail" and unsent_bytes(transport) == 0
    transport.socket.close()
    theirs.close()


def test_an_http_response_written_as_a_sequence_goes_at_once_too_and_patching_twice_changes_nothing():
    transport, theirs, reactor = connected_transport()
    assert send_at_once(transport)
    write = transport.write
    assert send_at_once(transport) and transport.write is write  # the gateway asks once per response
    transport.writeSequence([b"HTTP/1.1 200 OK\r\n", b"\r\n"])  # how Twisted writes a head and each chunk
    transport.writeSequence([b"5\r\n", b"hello", b"\r\n"])
    assert theirs.recv(100) == b"HTTP/1.1 200 OK\r\n\r\n5\r\nhello\r\n" and not reactor.writers
    transport.socket.close()
    theirs.close()
