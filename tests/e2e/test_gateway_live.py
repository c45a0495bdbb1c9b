"""In the browser: an app's stream through the recording gateway (the openai SDK with a token),
announced on the live wall, followed live on its run page, its row updated in place when it ends."""

import threading

import openai
import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot
from tests.support.servers import manage

pytestmark = pytest.mark.e2e


def test_a_gateway_run_appears_on_the_wall_and_streams_live(page_factory, live_app):
    token = manage(live_app["var_dir"], "create_token", "alice", "--name", "e2e").strip().splitlines()[-1]
    wall = page_factory()
    wall.goto(f"{live_app['url']}/runs/?source=gateway")

    outcome = {}

    def app_stream():  # the "app": the official SDK, only base_url and api_key changed
        client = openai.OpenAI(base_url=f"{live_app['url']}/gateway/simulator/v1", api_key=token, max_retries=0)
        with client.responses.stream(model="sim-text", input="Tell me about the gateway.",
                                     metadata={"sim_tokens_per_s": "12", "sim_tokens": "60"}) as stream:
            for _ in stream:
                pass
            outcome["text"] = stream.get_final_response().output_text

    app = threading.Thread(target=app_stream)
    app.start()
    try:
        # The wall announces the new run; showing it brings its row, still streaming.
        expect(wall.locator("[data-wall-new]")).to_contain_text("1 new run", timeout=15_000)
        wall.locator("[data-wall-new] a").click()
        row = wall.locator("[data-run-row]").first
        expect(row.locator(".status-badge")).to_have_text("streaming", timeout=10_000)
        run_id = int(row.get_attribute("data-run-row"))

        # Its run page follows it live, like a playground run.
        viewer = page_factory(context=wall.context, username=None)
        viewer.goto(f"{live_app['url']}/runs/{run_id}/")
        expect(viewer.locator("[data-status]")).to_have_text("streaming", timeout=10_000)
        expect(viewer.locator(".item-message .text")).not_to_be_empty(timeout=15_000)
        screenshot(viewer, "gateway-run-mid-stream")

        # The wall's row turns completed in place, without a reload.
        expect(row.locator(".status-badge")).to_have_text("completed", timeout=30_000)
        expect(viewer.locator("[data-status]")).to_have_text("completed", timeout=30_000)
        screenshot(wall, "gateway-live-wall")
    finally:
        app.join(timeout=60)
    assert outcome["text"]
    expect(viewer.locator(".item-message .text")).to_contain_text(outcome["text"][:20])
    assert not page_factory.console_errors
