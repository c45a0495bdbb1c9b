"""Twisted's private transport state, which dashboard/twisted_shim.py reads to bound slow viewers:
fail loudly if a Twisted upgrade renames it (the bound would silently stop working)."""

from twisted.internet import abstract

from dashboard.twisted_shim import unsent_bytes


def test_a_twisted_transport_still_counts_unsent_bytes_where_the_shim_reads_them():
    transport = abstract.FileDescriptor()
    for name in ("dataBuffer", "offset", "_tempDataLen"):
        assert hasattr(transport, name), f"twisted FileDescriptor lost {name}: dashboard/twisted_shim.py"
    transport._tempDataLen = 5
    transport.dataBuffer = b"abc"
    transport.offset = 1
    assert unsent_bytes(transport) == 7
