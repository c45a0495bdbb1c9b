"""In the browser: a run page whose session ends stops at "access refused" instead of reconnecting
every few seconds for ever (the socket closes with 4401, which static/js/socket.js honours; a
handshake refused with HTTP 403 reaches the page as 1006 and looks like a network fault)."""

from __future__ import annotations

import time

import pytest
from playwright.sync_api import expect

from tests.support.servers import manage

pytestmark = pytest.mark.e2e

RECORDING = (
    'event: response.created\ndata: {"type":"response.created","sequence_number":0,'
    '"response":{"id":"r","status":"in_progress","output":[]}}\n\n'
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    '"output_index":0,"content_index":0,"item_id":"m","delta":"hello"}\n\n'
)


def test_logging_out_in_another_tab_stops_the_run_page_at_access_refused(page_factory, live_app):
    path = live_app["var_dir"] / "refusal.sse"
    path.write_text(RECORDING)
    run_id = int(manage(live_app["var_dir"], "import_stream", str(path), "--user", "alice").strip().splitlines()[-1])

    page = page_factory("alice")
    sockets = []
    page.on("websocket", lambda ws: sockets.append(ws.url))
    page.goto(f"{live_app['url']}/runs/{run_id}/")
    expect(page.locator("[data-event-count]")).to_have_text("(2)", timeout=10_000)
    assert len(sockets) == 1

    other_tab = page.context.new_page()
    other_tab.goto(live_app["url"] + "/")
    other_tab.click("text=Log out")
    other_tab.wait_for_url("**/accounts/login/**")

    expect(page.locator("[data-conn]")).to_have_text("access refused", timeout=10_000)
    time.sleep(3)  # the first retry would come after 250 ms
    assert len(sockets) == 1, sockets
