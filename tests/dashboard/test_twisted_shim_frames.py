"""Viewers' text frames written straight to Daphne's transport (dashboard/twisted_shim.TextFrames):
a real websocket client reads every length class as sent, the bytes are the ones autobahn would
have written, anything unusual still goes autobahn's way, and a socket that cannot take a frame
buffers it in order."""

from __future__ import annotations

import asyncio
import json
import socket
import types

import pytest
from autobahn.exception import Disconnected
from daphne.ws_protocol import WebSocketFactory
from twisted.internet import tcp
from websockets.client import ClientProtocol
from websockets.frames import Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from dashboard.consumers import RunConsumer
from dashboard.twisted_shim import TextFrames, send_at_once, text_frame, transport_of, unsent_bytes
from tests.dashboard.test_slow_viewer import login, open_socket
from tests.support.servers import manage, start_daphne, stop_process
from tests.support.twisted_reactor import Reactor

# 7-bit, 16-bit and 64-bit lengths, at and around each boundary, and multi-byte UTF-8.
TEXTS = ["a", "x" * 125, "x" * 126, "é" * 40_000, "x" * 65_535, "x" * 65_536, "€" * 300_000]


@pytest.fixture
def daphne_socket():
    """An open websocket as Daphne holds it (its protocol over a real TCP transport), the server's
    connection table, and the client end of the socket."""
    server = types.SimpleNamespace(connections={})
    factory = WebSocketFactory(server)
    factory.setProtocolOptions(maxMessagePayloadSize=16 * 1024 * 1024, openHandshakeTimeout=0,
                               closeHandshakeTimeout=0)
    ours, theirs = socket.socketpair()
    protocol = factory.buildProtocol(None)
    protocol.transport = tcp.Connection(ours, protocol=protocol, reactor=Reactor())
    protocol.transport.connected = True
    protocol._connectionMade()
    protocol.state = protocol.STATE_OPEN
    server.connections[protocol] = {}
    send_at_once(protocol.transport)
    theirs.setblocking(False)
    yield server, protocol, theirs
    ours.close()
    theirs.close()


def client_reads(data: bytes) -> list:
    client = ClientProtocol(parse_uri("ws://viewer/"), max_size=None, state=State.OPEN)
    client.receive_data(data)
    assert client.parser_exc is None
    return client.events_received()


def drain(theirs: socket.socket, transport) -> bytes:
    received = bytearray()
    while True:
        try:
            chunk = theirs.recv(1 << 20)
        except BlockingIOError:
            if not unsent_bytes(transport):
                return bytes(received)
            transport.doWrite()
            continue
        received += chunk


def test_a_websocket_client_reads_every_length_class_as_sent():
    for text in TEXTS:
        frames = client_reads(text_frame(text.encode()))
        assert [(f.opcode, f.fin, bytes(f.data).decode()) for f in frames] == [(Opcode.TEXT, True, text)]


def test_the_frames_are_the_bytes_autobahn_writes(daphne_socket):
    server, protocol, theirs = daphne_socket
    frames = TextFrames(server, protocol)
    for text in TEXTS:
        assert frames.send(text)
        ours = drain(theirs, protocol.transport)
        protocol.sendMessage(text.encode())
        assert ours == drain(theirs, protocol.transport) == text_frame(text.encode())


def test_the_writer_is_found_behind_the_asgi_send_channels_wraps(daphne_socket):
    server, protocol, _ = daphne_socket

    class SessionWrapper:  # what channels.sessions.InstanceSessionWrapper looks like from here
        def __init__(self, real_send) -> None:
            self.real_send = real_send

        async def send(self, message) -> None: ...

    import functools

    async def handle_reply(protocol, message) -> None: ...

    server.handle_reply = handle_reply
    send = SessionWrapper(functools.partial(types.MethodType(lambda self, p, m: None, server), protocol)).send
    frames = TextFrames.of(send)
    assert frames is not None and frames.protocol is protocol and frames.server is server
    assert transport_of(send) is protocol.transport
    assert TextFrames.of(object()) is None  # a test communicator: the usual way


def test_anything_unusual_goes_autobahns_way(daphne_socket):
    server, protocol, theirs = daphne_socket
    frames = TextFrames(server, protocol)
    assert not frames.send("")  # Daphne sends nothing for an empty text: left to it
    protocol.send_queue.append((b"queued", False))  # autobahn holds data: nothing may pass it
    assert not frames.send("x")
    protocol.send_queue.clear()
    protocol._perMessageCompress = object()  # compression negotiated
    assert not frames.send("x")
    protocol._perMessageCompress = None
    protocol.maxMessagePayloadSize = 10  # past the limit: autobahn refuses it and says so
    assert not frames.send("x" * 11)
    assert frames.send("x" * 10)
    assert drain(theirs, protocol.transport) == text_frame(b"x" * 10)
    protocol.state = protocol.STATE_CLOSING  # closing: autobahn raises, as before
    assert not frames.send("x")
    with pytest.raises(Disconnected):
        protocol.sendMessage(b"x")


def test_a_connection_daphne_let_go_gets_nothing(daphne_socket):
    server, protocol, theirs = daphne_socket
    frames = TextFrames(server, protocol)
    server.connections[protocol]["disconnected"] = 1.0
    assert frames.send("x")  # dropped, as Daphne's handle_reply drops it
    del server.connections[protocol]
    assert frames.send("x")
    assert drain(theirs, protocol.transport) == b""


def test_what_the_socket_cannot_take_is_buffered_and_later_frames_wait_behind_it(daphne_socket):
    server, protocol, theirs = daphne_socket
    frames = TextFrames(server, protocol)
    big = "x" * 8_000_000  # more than the socket takes at once
    assert frames.send(big)
    assert unsent_bytes(protocol.transport) > 0  # what a slow viewer's bound reads
    assert frames.send("tail")
    assert [bytes(f.data) for f in client_reads(drain(theirs, protocol.transport))] == [big.encode(), b"tail"]


async def test_the_consumer_sends_text_through_the_writer_and_the_rest_the_usual_way():
    consumer = RunConsumer()
    sent: list = []

    async def base_send(message) -> None:
        sent.append(message)

    consumer.base_send = base_send
    written: list[str] = []
    consumer.text_frames = types.SimpleNamespace(send=lambda text: written.append(text) or text != "declined")
    await consumer.send(text_data="frame")
    await consumer.send(text_data="declined")
    await consumer.send(bytes_data=b"bytes")
    await consumer.close(code=4401)
    assert written == ["frame", "declined"]
    assert sent == [{"type": "websocket.send", "text": "declined"}, {"type": "websocket.send", "bytes": b"bytes"},
                    {"type": "websocket.close", "code": 4401}]


# --- for real: Daphne and a websocket client ---------------------------------------------------

@pytest.fixture
def app(tmp_path):
    embedded = {"DATABASE_URL": "", "REDIS_URL": "", "STREAMSCOPE_LAUNCHER": "asyncio"}
    manage(tmp_path, "migrate", "--noinput", env=embedded)
    # One run whose stored events make frames of each length class (a backlog page is one frame).
    run_id = manage(tmp_path, "shell", "-c", f"""
import json
from django.contrib.auth.models import User
from streams.models import Event, Run
alice = User.objects.create_user('alice', password='alice-pass-123')
run = Run.objects.create(owner=alice, provider='simulator', model='sim-text', request={{}}, status='completed')
sizes = {[1, 100, 30_000, 90_000, 150_000, 10, 250_000]!r}
for seq, size in enumerate(sizes):
    data = json.dumps({{'type': 'response.output_text.delta', 'delta': '\u00e9' * size, 'sequence_number': seq}})
    Event.objects.create(run=run, seq=seq, t=float(seq), type='response.output_text.delta', data=data)
Run.objects.filter(pk=run.pk).update(event_count=len(sizes))
print(run.pk)
""", env=embedded)
    process, base_url = start_daphne(tmp_path, extra_env=embedded)
    try:
        yield base_url, int(run_id.split()[-1])
    finally:
        stop_process(process)


@pytest.mark.server
async def test_a_real_client_reads_frames_of_every_size_from_daphne(app):
    base_url, run_id = app
    client = login(base_url)
    socket_ = await open_socket(base_url, client, run_id)
    frames = []
    try:
        async for raw in socket_:
            frames.append(json.loads(raw))
            if frames[-1]["type"] == "status":
                break
        events = [event for frame in frames if frame["type"] == "events" for event in frame["events"]]
        assert [len(event["data"]["delta"]) for event in events] == [1, 100, 30_000, 90_000, 150_000, 10, 250_000]
        assert len(frames) > 3  # split into frames of every length class (consumers.FRAME_MAX_CHARS)
        assert frames[-1]["status"] == "completed"
        await socket_.close(code=1000)
        await asyncio.wait_for(socket_.wait_closed(), 5)
        assert socket_.close_code == 1000
    finally:
        await socket_.close()
