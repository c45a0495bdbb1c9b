"""Viewer faults in the browser: the server dies mid-stream and comes back on the same address.
The page must show it is reconnecting, resume with after=<last seq>, and end with exactly the
stored events, none missing, none doubled."""

import os
import signal

import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot
from tests.support.live import login, start_run, wait_for
from tests.support.live import stored_events as events
from tests.support.servers import free_port, start_daphne

pytestmark = pytest.mark.e2e


def test_page_reconnects_after_the_server_dies_and_ends_exact(crash_setup, browser):
    app_dir, env, processes = crash_setup
    port = free_port()
    app, url = start_daphne(app_dir, extra_env=env, port=port)
    processes.append(app)
    client = login(url, "alice", "alice-pass-123")
    run_id = start_run(client)

    context = browser.new_context(viewport={"width": 1280, "height": 800})
    context.add_cookies([{"name": c.name, "value": c.value, "url": url} for c in client.cookies.jar])
    page = context.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{url}/runs/{run_id}/")
    expect(page.locator("[data-status]")).to_have_text("streaming", timeout=10_000)
    wait_for(lambda: int(page.locator('[data-metric="events"]').inner_text()) >= 15, 15, "15 events on the page")

    os.kill(app.pid, signal.SIGKILL)
    app.wait()
    expect(page.locator("[data-conn]")).to_have_text("reconnecting…", timeout=10_000)
    screenshot(page, "reconnecting")

    restarted, _ = start_daphne(app_dir, extra_env=env, port=port)
    processes.append(restarted)
    expect(page.locator("[data-status]")).to_have_text("completed", timeout=40_000)
    stored = events(client, run_id)
    expect(page.locator("[data-event-count]")).to_have_text(f"({len(stored)})")
    seqs = page.evaluate("() => Array.from(document.querySelectorAll('.event-row')).length")
    assert seqs > 0
    screenshot(page, "reconnected-completed")
    assert errors == []
    context.close()
