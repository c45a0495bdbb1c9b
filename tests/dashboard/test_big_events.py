"""One event larger than Daphne's default 1 MiB websocket message limit (a partial image easily is)
must still reach a viewer: served as the Makefile and Procfile serve it, the socket stays open."""

import asyncio
import json

import pytest

from tests.support.live import login
from tests.support.servers import manage, start_daphne, stop_process

pytestmark = pytest.mark.server  # Daphne serves it, as the Makefile does


def test_a_three_megabyte_event_reaches_the_viewer(tmp_path):
    websockets = pytest.importorskip("websockets")
    manage(tmp_path, "migrate", "--noinput")
    manage(tmp_path, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('alice', password='alice-pass-123')")
    delta = "x" * 3_000_000
    body = (
        'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
        '"response":{"id":"r","status":"in_progress","output":[]}}\n\n'
        'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
        '"output_index":0,"content_index":0,"item_id":"m","delta":"' + delta + '"}\n\n'
    )
    (tmp_path / "big.sse").write_text(body)
    run_id = int(manage(tmp_path, "import_stream", str(tmp_path / "big.sse"), "--user", "alice")
                 .strip().splitlines()[-1])
    process, url = start_daphne(tmp_path)
    try:
        client = login(url, "alice", "alice-pass-123")
        cookie = "; ".join(f"{c.name}={c.value}" for c in client.cookies.jar)

        async def watch():
            received = []
            async with websockets.connect(f"{url.replace('http', 'ws')}/ws/runs/{run_id}/", max_size=None,
                                          additional_headers={"Cookie": cookie, "Origin": url}) as ws:
                while True:
                    frame = json.loads(await asyncio.wait_for(ws.recv(), 10))
                    if frame["type"] != "events":
                        return received, frame
                    received.extend(frame["events"])

        received, status = asyncio.run(watch())
        assert [e["seq"] for e in received] == [0, 1]
        assert received[1]["data"]["delta"] == delta
        assert status["type"] == "status"
    finally:
        stop_process(process)
