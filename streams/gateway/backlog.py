"""What the relay gave the client and the recorder has not taken yet: in order, in memory up to a
bound, past it in a temporary file, so that the relay never waits for the recorder.

The relay (streams/gateway/proxy.py, StreamRelay) appends every chunk it forwarded with the time it
arrived; the recorder takes them back in the same order when the stream allows (a burst once it
pauses or ends). A burst longer than the memory bound used to hold the relay until the recorder had
caught up, which gave the client's stream the recorder's pace and CPU on a small machine; now its
excess goes to a file (writes and reads of 256 KiB) and the client's stream keeps
the upstream's pace however long the burst (docs/gateway.md, "Bursts").

Three places, read in this order: ``memory`` (chunks while nothing is spilled), the file (bytes
``[_read_at, _written)`` of a ring of ``spill_limit`` bytes, in ``_block`` once read) and ``pending``
(chunks spilled but not yet written: written once they reach SPILL_WRITE_BYTES). ``_sizes`` and
``_times`` hold the length and time of every chunk in the file or pending, in order, from ``_next``
on (12-16 bytes a chunk, not a tuple of ~130: a burst read in small pieces holds hundreds of
thousands); a chunk is wholly in one place.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections import deque

# Spilled chunks are written to the file this many bytes at a time, and read back as much: a write
# or read is on the event loop, so it stays small (1 MiB writes took up to 12-17 ms on a busy disk).
SPILL_WRITE_BYTES = 256 * 1024
READ_BLOCK_BYTES = 256 * 1024
# What every stream of this process may hold in files at once: past it, a stream's backlog takes no
# more (as past its own limit). A temporary directory on tmpfs holds it in memory: point TMPDIR at a disk.
PROCESS_SPILL_MAX_BYTES = 1024 * 1024 * 1024
COMPACT_AFTER = 65536  # taken chunks' sizes and times dropped once this many, and half, were taken


class SpillFailed(Exception):
    """The temporary file could not be made, written or read (disk full, no space for temp files)."""


class Backlog:
    on_disk = 0  # bytes unread in every backlog's file of this process, and waiting to go in (class-wide)

    def __init__(self, memory_limit: int, spill_limit: int) -> None:
        self.memory_limit = memory_limit
        self.spill_limit = spill_limit
        self.bytes = 0  # held in all three places
        self.count = 0
        self.memory: deque[tuple[bytes, float]] = deque()
        self.memory_bytes = 0
        self._sizes = array("Q")
        self._times = array("d")
        self._next = 0  # the first of _sizes/_times not yet taken
        self.spilled_bytes = 0
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.spilled_ever = 0  # bytes that went through the file (for the run's record of a long burst)
        self._file: tempfile._TemporaryFileWrapper | None = None  # type: ignore[name-defined]
        self._written = 0  # the file's end
        self._read_at = 0  # the first byte not yet in _block
        self._block = b""
        self._block_at = 0  # the first byte of _block not yet taken
        self.closed = False  # closed: it holds nothing and takes nothing more

    def __len__(self) -> int:
        return self.count

    def __bool__(self) -> bool:
        return self.count > 0

    def append(self, chunk: bytes, t: float) -> bool:
        """Hold a chunk; False (and nothing held) when it would take the spill past its limit.
        Raises SpillFailed when the file cannot be written: the chunk is held all the same (with the
        others not yet written, in memory), but nothing more should be."""
        if self.closed:
            return False
        size = len(chunk)
        spilling = self._next < len(self._sizes)
        if not spilling and (self.memory_bytes + size <= self.memory_limit or not self.memory):
            self.memory.append((chunk, t))
            self.memory_bytes += size
        else:
            # What the file holds unread and what waits to go in: the file is a ring of spill_limit bytes.
            if (self._written - self._read_at + self.pending_bytes + size > self.spill_limit
                    or Backlog.on_disk + size > PROCESS_SPILL_MAX_BYTES):
                return False
            self._sizes.append(size)
            self._times.append(t)
            self.spilled_bytes += size
            Backlog.on_disk += size
            self.spilled_ever += size
            self.pending.append(chunk)
            self.pending_bytes += size
        self.bytes += size
        self.count += 1
        if self.pending_bytes >= SPILL_WRITE_BYTES:
            self._write()  # a failure leaves every chunk held (pending) and in order
        return True

    def popleft(self) -> tuple[bytes, float]:
        """The oldest chunk and its time (IndexError when empty). Raises SpillFailed when the file
        cannot be read."""
        if self.memory:
            chunk, t = self.memory.popleft()
            self.memory_bytes -= len(chunk)
        else:
            at = self._next
            if at >= len(self._sizes):
                raise IndexError("the backlog is empty")
            size, t = self._sizes[at], self._times[at]
            if self._block_at < len(self._block) or self._read_at < self._written:
                chunk = self._read(size)
            else:
                chunk = self.pending.popleft()
                self.pending_bytes -= size
                Backlog.on_disk -= size
            self._next = at + 1
            self.spilled_bytes -= size
            if self._next == len(self._sizes):
                self._next = 0
                del self._sizes[:], self._times[:]
            elif self._next >= COMPACT_AFTER and 2 * self._next >= len(self._sizes):  # what was taken, let go
                del self._sizes[:self._next], self._times[:self._next]
                self._next = 0
        self.bytes -= len(chunk)
        self.count -= 1
        return chunk, t

    def close(self) -> None:
        """Forget everything held and remove the file."""
        if self._file is not None:
            self._file.close()
            self._file = None
        Backlog.on_disk -= self._written - self._read_at + self.pending_bytes
        self._written = self._read_at = self._block_at = 0
        self.closed = True
        self.memory.clear()
        del self._sizes[:], self._times[:]
        self._next = 0
        self.pending.clear()
        self._block = b""
        self.bytes = self.count = self.memory_bytes = self.spilled_bytes = self.pending_bytes = 0

    def _write(self) -> None:
        """The pending chunks into the file, at their place in its ring (``_written`` counts every
        byte ever written: its place is that modulo spill_limit, what is unread never over it)."""
        try:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="streamscope-burst-")
            data = memoryview(b"".join(self.pending))  # one copy: cheaper than a write per chunk
            fd = self._file.fileno()
            at = self._written
            while data:
                place = at % self.spill_limit
                done = os.pwrite(fd, data[:self.spill_limit - place], place)
                at += done
                data = data[done:]
        except OSError as exc:
            raise SpillFailed(f"holding a burst's unrecorded bytes in a temporary file failed ({exc})") from exc
        self._written = at
        self.pending.clear()
        self.pending_bytes = 0

    def _read(self, size: int) -> bytes:
        have = len(self._block) - self._block_at
        if have < size:
            parts = [self._block[self._block_at:]]
            want = min(max(READ_BLOCK_BYTES, size - have), self._written - self._read_at)
            while want > 0:
                place = self._read_at % self.spill_limit
                try:
                    data = os.pread(self._file.fileno(), min(want, self.spill_limit - place), place)  # type: ignore[union-attr]
                except OSError as exc:
                    raise SpillFailed(f"reading a burst's unrecorded bytes back from its temporary file "
                                      f"failed ({exc})") from exc
                if not data:
                    raise SpillFailed("a burst's temporary file was shorter than what was written to it")
                parts.append(data)
                self._read_at += len(data)
                Backlog.on_disk -= len(data)  # in memory now: its place in the ring may be written again
                want -= len(data)
            self._block = b"".join(parts)
            self._block_at = 0
            if len(self._block) < size:
                raise SpillFailed("a burst's temporary file was shorter than what was written to it")
        chunk = self._block[self._block_at:self._block_at + size]
        self._block_at += size
        return chunk
