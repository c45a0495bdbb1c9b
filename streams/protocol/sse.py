"""Incremental server-sent-events decoder working on raw bytes.

Follows the WHATWG event-stream interpretation (CR, LF or CRLF line ends; ``:`` comments;
``data`` lines joined with ``\\n``; one optional space after the colon). Written here rather
than taken from httpx-sse because Streamscope needs three things no SSE library offers:
a hard limit on the size of one event (a 10 MB line must not eat the server), the byte count
of every event (for metrics), and frames that stay bytes until JSON decoding, so a partial
UTF-8 sequence split across network chunks is never decoded early. docs/decisions.md says more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# The spec's decoder drops one UTF-8 byte order mark at the very start of a stream: kept, it would
# turn the first line (``event: ...``) into a line that is not a field and lose the first event.
BOM = b"\xef\xbb\xbf"

# Every whole line of an LF-only chunk, in one C call: an event of exactly one ``event:`` line and
# one ``data:`` line (nearly every event a server sends) as one match, (name line, space, value),
# any other line as a match of its own. Nothing is skipped: the line alternative matches anywhere.
_LINES = re.compile(rb"(event:[^\n]*)\ndata:( ?)([^\n]*)\n\n|([^\n]*)\n")


# Below this a read holds a few events at most (a slow stream's, one): feed's one-event path is cheaper
# for those than gathering them (2.7 against 5.1 us for one delta, docs/performance.md).
MATCHING_MIN_BYTES = 1024


class EventTooLarge(Exception):
    """An event (or a line) grew past the configured maximum without ending."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"an event exceeded the maximum size of {limit} bytes; stream abandoned")
        self.limit = limit


@dataclass(slots=True)
class SSEFrame:
    """One dispatched event: its ``event:`` name, joined ``data`` and the bytes it took."""

    event: str
    data: str
    id: str | None
    nbytes: int


@dataclass(slots=True)
class MatchedEvents:
    """Whole events, one after another, each its ``prefix`` (the lines before its data value) and one
    data line: ``values`` has each one's data value (bytes, without a line end), ``nbytes`` is their
    bytes in all. :meth:`frames` gives the frames :meth:`SSEDecoder.feed` would have given for them,
    for a caller that cannot use the values after all."""

    values: list[bytes]
    source: bytes = field(repr=False)  # the chunk they are in, from start to end
    start: int
    end: int
    event_id: str | None  # the decoder's last event id, which these events' frames carry

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    def frames(self) -> list[SSEFrame]:
        decoder = SSEDecoder()
        decoder._at_start = False
        decoder._id = self.event_id
        return decoder.feed(self.source[self.start:self.end])


class SSEDecoder:
    """Feed it chunks of bytes with :meth:`feed`; it returns the frames completed so far."""

    def __init__(self, max_event_bytes: int = 8 * 1024 * 1024) -> None:
        self.max_event_bytes = max_event_bytes
        self._buffer = bytearray()
        self._event = ""
        self._data: list[bytes] = []
        self._id: str | None = None
        self._pending_bytes = 0
        self._has_fields = False
        self._at_start = True  # no byte seen yet past a possible byte order mark
        self._head = b""  # the first bytes while they may still be a split byte order mark
        # Lines that are neither a field nor a comment (binary garbage, a body that is not SSE):
        # kept (bounded) so the runner can record them instead of losing them silently.
        self.ignored_lines: list[bytes] = []
        self._names: dict[bytes, str] = {}  # event: lines seen, with the names they give

    def take_ignored(self) -> list[bytes]:
        lines, self.ignored_lines = self.ignored_lines, []
        return lines

    def feed(self, chunk: bytes) -> list[SSEFrame]:
        if self._at_start:
            chunk = self._past_bom(chunk)
            if not chunk:
                return []
        buffer = self._buffer
        if b"\r" in chunk or (buffer and buffer[-1] == 0x0D):
            return self._feed_any(chunk)
        # Lines end with LF only (what nearly every server sends): every whole line found by one
        # regular expression, an event/data pair read as it matched. Same results as _feed_any.
        if buffer:
            buffer += chunk
            chunk = bytes(buffer)
            buffer.clear()
        elif (chunk[-2:] == b"\n\n" and chunk.startswith(b"event:") and chunk.count(b"\n") == 3
              and not (self._has_fields or self._pending_bytes)):
            # A slow stream's every read: exactly one event, its event: line and its data: line.
            # What the regular expression below would match, without it (a third of the call).
            line_end = chunk.find(b"\n")
            if chunk.startswith(b"data:", line_end + 1):
                name_line = chunk[:line_end]
                start = line_end + (7 if chunk[line_end + 6:line_end + 7] == b" " else 6)
                try:
                    text = chunk[start:-2].decode()
                except UnicodeDecodeError:
                    text = chunk[start:-2].decode("utf-8", "replace")
                return [SSEFrame(self._names.get(name_line) or self._event_name(name_line), text, self._id,
                                 len(chunk))]
        end = chunk.rfind(b"\n") + 1
        frames: list[SSEFrame] = []
        if end:
            names = self._names
            event_id = self._id
            clean = not (self._has_fields or self._pending_bytes)  # no event begun before the match
            for name_line, space, value, line in _LINES.findall(chunk, 0, end):
                if name_line and clean:
                    try:
                        text = value.decode()  # strict and without arguments: a third cheaper
                    except UnicodeDecodeError:
                        text = value.decode("utf-8", "replace")
                    frames.append(SSEFrame(names.get(name_line) or self._event_name(name_line), text, event_id,
                                           len(name_line) + len(space) + len(value) + 8))
                    continue
                if name_line:  # the pair continues an event begun by earlier lines
                    self._lines((name_line, b"data:" + space + value, b""), frames)
                else:
                    self._lines((line,), frames)
                event_id = self._id
                clean = not (self._has_fields or self._pending_bytes)
        rest = chunk[end:]  # the unterminated end: b"" when the chunk ended with a line
        if rest:
            buffer += rest
        if len(rest) + self._pending_bytes > self.max_event_bytes:
            raise EventTooLarge(self.max_event_bytes)
        return frames

    def feed_matching(self, chunk: bytes, prefix: bytes) -> tuple[list[SSEFrame], MatchedEvents | None]:
        """:meth:`feed`, except that when every whole event after the first event boundary of an
        LF-only chunk is ``prefix`` (say ``b"event: x\\ndata: "``), a value and a blank line, those
        events come back as one :class:`MatchedEvents`, not as frames: the frames before them
        first (what completes an event begun in earlier chunks), then the matched events. A fast
        stream's read is a few hundred events of one kind; a caller reading their values together
        makes no object per event. Any other chunk: ``(feed(chunk), None)``."""
        buffer = self._buffer
        if (len(chunk) < MATCHING_MIN_BYTES or self._at_start or b"\r" in chunk
                or (buffer and buffer[-1] == 0x0D)):
            return self.feed(chunk), None
        frames: list[SSEFrame] = []
        start = 0
        if buffer or self._has_fields or self._pending_bytes:
            # An event begun in earlier chunks: its end (the chunk's first blank line) read as feed would.
            start = chunk.find(b"\n\n") + 2
            if start < 2:
                return self.feed(chunk), None
            frames = self.feed(chunk[:start])
            if buffer or self._has_fields or self._pending_bytes:
                frames += self.feed(chunk[start:])
                return frames, None
        end = chunk.rfind(b"\n\n") + 2
        if end <= start or not chunk.startswith(prefix, start):
            frames += self.feed(chunk[start:] if start else chunk)
            return frames, None
        values = chunk[start + len(prefix):end - 2].split(b"\n\n" + prefix)
        # Each event has the prefix's line ends and two more exactly when no value holds a line end.
        if chunk.count(b"\n", start, end) != len(values) * (prefix.count(b"\n") + 2):
            frames += self.feed(chunk[start:] if start else chunk)
            return frames, None
        matched = MatchedEvents(values, chunk, start, end, self._id)
        if end < len(chunk):
            # No blank line in the rest (the last one ends the match): no frame, only lines of an
            # event that the next chunk completes (or EventTooLarge, as feed raises it).
            self.feed(chunk[end:])
        return frames, matched

    def _lines(self, lines: tuple[bytes, ...], frames: list[SSEFrame]) -> None:
        """Whole LF-ended lines read one by one; the events they complete appended to ``frames``."""
        pending = self._pending_bytes
        data = self._data
        for line in lines:
            if not line:  # a blank line: the event so far is dispatched
                if self._has_fields:
                    text = data[0] if len(data) == 1 else b"\n".join(data)
                    frames.append(SSEFrame(self._event, text.decode("utf-8", errors="replace"), self._id, pending + 1))
                    self._event = ""
                    data = self._data = []
                    self._has_fields = False
                pending = 0
                continue
            pending += len(line) + 1
            if line.startswith(b"data:"):
                data.append(line[6:] if line[5:6] == b" " else line[5:])
                self._has_fields = True
            elif line.startswith(b"event:"):
                # Decoded once per name: a stream repeats a few dozen names thousands of times.
                self._event = self._names.get(line) or self._event_name(line)
                self._has_fields = True
            else:
                self._field(line)
        self._pending_bytes = pending

    def _event_name(self, line: bytes) -> str:
        """The name an ``event:`` line gives, remembered for the next line like it (a few hundred at most)."""
        name = (line[7:] if line[6:7] == b" " else line[6:]).decode("utf-8", errors="replace")
        if len(self._names) < 256:
            self._names[line] = name
        return name

    def _past_bom(self, chunk: bytes) -> bytes:
        """The stream's first bytes without a leading byte order mark (its bytes still count
        towards the first event); b"" while a mark split across chunks is still undecided."""
        head = self._head + chunk
        if len(head) < len(BOM) and BOM.startswith(head):
            self._head = head
            return b""
        self._at_start = False
        self._head = b""
        if head.startswith(BOM):
            self._pending_bytes += len(BOM)
            return head[len(BOM) :]
        return head

    def _feed_any(self, chunk: bytes) -> list[SSEFrame]:
        """Any line ends (CR, LF, CRLF, a CR whose LF is still to come), one line at a time."""
        frames: list[SSEFrame] = []
        buffer = self._buffer
        buffer += chunk
        start = 0
        end = len(buffer)
        find = buffer.find
        while start < end:
            lf = find(b"\n", start)
            cr = find(b"\r", start, lf if lf != -1 else end)
            if cr != -1:
                if cr + 1 == end:
                    # Is this CR half of a CRLF? Only the next chunk can tell: wait for it.
                    break
                line_end = cr
                skip = 2 if buffer[cr + 1] == 0x0A else 1
            elif lf != -1:
                line_end = lf
                skip = 1
            else:
                break
            line = bytes(buffer[start:line_end])
            self._pending_bytes += line_end - start + skip
            start = line_end + skip
            frame = self._line(line)
            if frame is not None:
                frames.append(frame)
        del buffer[:start]
        if len(buffer) + self._pending_bytes > self.max_event_bytes:
            raise EventTooLarge(self.max_event_bytes)
        return frames

    def close(self) -> tuple[list[SSEFrame], bytes]:
        """End of stream: returns frames still complete-able and any bytes left unterminated.

        A final event without its blank line is dispatched (servers that forget the last
        blank line are common); a partial line is returned so the caller can record it.
        """
        frames: list[SSEFrame] = []
        leftover = self._head + bytes(self._buffer)  # _head: a stream that ended inside a mark
        self._head = b""
        self._buffer.clear()
        if leftover:
            self._pending_bytes += len(leftover)
            frame = self._line(leftover[:-1] if leftover.endswith(b"\r") else leftover)
            if frame is not None:
                frames.append(frame)
            leftover = b""
        frame = self._line(b"")
        if frame is not None:
            frames.append(frame)
        return frames, leftover

    def _line(self, line: bytes) -> SSEFrame | None:
        if not line:
            if not self._has_fields:
                self._pending_bytes = 0
                return None
            return self._dispatch(self._pending_bytes)
        self._field(line)
        return None

    def _dispatch(self, nbytes: int) -> SSEFrame:
        """The event the fields so far make, ``nbytes`` long; the decoder starts a new one."""
        frame = SSEFrame(
            event=self._event,
            data=b"\n".join(self._data).decode("utf-8", errors="replace"),
            id=self._id,
            nbytes=nbytes,
        )
        self._event = ""
        self._data = []
        self._has_fields = False
        self._pending_bytes = 0
        return frame

    def _field(self, line: bytes) -> None:
        """One non-blank line: a comment, a field, or a line that is neither (kept for the caller)."""
        if line[:1] == b":":
            return
        name, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._has_fields = True
        elif name == b"event":
            self._event = value.decode("utf-8", errors="replace")
            self._has_fields = True
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", errors="replace")
            self._has_fields = True
        elif name == b"retry":
            self._has_fields = True
        elif len(self.ignored_lines) < 100:
            # Not a field the spec knows: browsers ignore it too, but it is worth recording.
            self.ignored_lines.append(line[:4096])
