"""A scripted upstream: a real HTTP/1.1 server on a socket that sends exactly the bytes a test
wants, when it wants, so tests can inject faults (malformed SSE, drops, stalls) for real."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field


@dataclass
class Script:
    status: int = 200
    content_type: str = "text/event-stream"
    # Each step: (delay in seconds, bytes to send as one chunk).
    steps: list[tuple[float, bytes]] = field(default_factory=list)
    # "close" ends the chunked body properly; "drop" cuts the connection mid-body; "hang" never ends.
    ending: str = "close"


# A Responses object as it looks while in progress; text_stream's events carry it.
RESP = {"id": "resp_1", "object": "response", "status": "in_progress", "output": [], "usage": None}


def text_stream(words, *, seq_from=0, terminal=True):
    """A Responses stream that writes ``words`` as deltas (and completes, unless ``terminal`` is
    false), from sequence number ``seq_from`` on: what a resumed stream sends after a cut."""
    events = [
        {"type": "response.created", "sequence_number": 0, "response": RESP},
        {"type": "response.in_progress", "sequence_number": 1, "response": RESP},
    ]
    for word in words:
        events.append({"type": "response.output_text.delta", "sequence_number": len(events), "item_id": "msg_1",
                       "output_index": 0, "content_index": 0, "delta": word, "obfuscation": "xyz"})
    if terminal:
        final = {**RESP, "status": "completed", "usage": {"output_tokens": len(words)},
                 "output": [{"type": "message", "id": "msg_1",
                             "content": [{"type": "output_text", "text": "".join(words)}]}]}
        events.append({"type": "response.completed", "sequence_number": len(events), "response": final})
    return [e for e in events if e["sequence_number"] >= seq_from]


def sse(*events: dict, event_lines: bool = True) -> bytes:
    out = b""
    for event in events:
        if event_lines:
            out += f"event: {event['type']}\n".encode()
        out += b"data: " + json.dumps(event).encode() + b"\n\n"
    return out


class ScriptedUpstream:
    def __init__(self) -> None:
        self.scripts: list[Script] = []
        self.requests: list[dict] = []
        self.server: asyncio.AbstractServer | None = None

    @property
    def base_url(self) -> str:
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def start(self) -> ScriptedUpstream:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self.server:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            self.requests.append({"method": method, "path": path, "headers": headers, "body": body})
            script = self.scripts.pop(0) if self.scripts else Script(
                status=404, steps=[(0, b'{"error":{"message":"no script"}}')])
            reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 429: "Too Many Requests",
                      500: "Internal Server Error"}.get(script.status, "Status")
            writer.write(
                f"HTTP/1.1 {script.status} {reason}\r\ncontent-type: {script.content_type}\r\n"
                f"transfer-encoding: chunked\r\nconnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            for delay, chunk in script.steps:
                if delay:
                    await asyncio.sleep(delay)
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
            if script.ending == "hang":
                await asyncio.sleep(3600)
            if script.ending == "drop":
                writer.transport.abort()
                return
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            writer.close()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            writer.transport.abort()
