"""In the browser: an app's NON-streamed calls through the recording gateway (the openai SDK, stream
off) show on their run page what the same answer streamed shows: the items of every family, the
output text, the outcome; a background request's queued answer says so (issue 12, item 4)."""

from __future__ import annotations

import openai
import pytest
from playwright.sync_api import expect

from simulator.scenarios import SCENARIOS
from tests.e2e import test_families
from tests.e2e.test_families import CHAT_KINDS, SCENARIO_KINDS, check_run_page, new_page
from tests.support.browser import screenshot
from tests.support.servers import manage

pytestmark = pytest.mark.e2e
alice = test_families.alice  # the logged-in browser context and API client, a fixture

FAST = {"sim_seed": "11", "sim_tokens_per_s": "max"}
# What only a stream carries: response-level audio (response.audio.* events), and the message a
# failed Response drops (its output holds none of it).
BODY_KINDS = {**SCENARIO_KINDS, "sim-audio": [".item-message"], "sim-failed": [".item-outcome.outcome-failed"],
              "sim-all-families": [s for s in SCENARIO_KINDS["sim-all-families"] if not s.startswith(".item-audio")]}
WHOLE = [s for s in SCENARIOS if s.outcome in ("completed", "incomplete", "failed")]
CHAT = [s for s in WHOLE if s.chat and s.outcome in ("completed", "incomplete")]


@pytest.fixture(scope="module")
def client(live_app):
    token = manage(live_app["var_dir"], "create_token", "alice", "--name", "e2e-body").strip().splitlines()[-1]
    return openai.OpenAI(base_url=f"{live_app['url']}/gateway/simulator/v1", api_key=token, max_retries=0)


def run_id_of(raw) -> int:
    return int(raw.headers["x-streamscope-run"])


@pytest.mark.parametrize("scenario", WHOLE, ids=lambda s: s.id)
def test_a_whole_response_shows_its_items_on_the_run_page(alice, live_app, client, scenario):
    context, api = alice
    page, errors = new_page(context)
    raw = client.responses.with_raw_response.create(model=scenario.id, input="Tell me about streams & <b>tags</b>",
                                                    metadata=FAST)
    answer = raw.parse()
    selectors = [*BODY_KINDS.get(scenario.id, [".item"]), ".item-outcome"]
    detail = check_run_page(page, errors, api, live_app["url"], run_id_of(raw), selectors,
                            f"gateway-body-{scenario.id.removeprefix('sim-')}")
    assert detail["status"] == scenario.outcome == answer.status
    assert detail["output_text"] == answer.output_text
    expect(page.locator("[data-output] .placeholder")).to_have_count(0)
    page.close()


@pytest.mark.parametrize("scenario", CHAT, ids=lambda s: s.id)
def test_a_whole_chat_completion_shows_its_message_and_tool_calls(alice, live_app, client, scenario):
    context, api = alice
    page, errors = new_page(context)
    raw = client.chat.completions.with_raw_response.create(
        model=scenario.id, messages=[{"role": "user", "content": "hi"}], stream=False, metadata=FAST)
    answer = raw.parse()
    check_run_page(page, errors, api, live_app["url"], run_id_of(raw), CHAT_KINDS[scenario.chat],
                   f"gateway-body-chat-{scenario.id.removeprefix('sim-')}")
    calls = answer.choices[0].message.tool_calls or []
    names = page.locator(".item-function_call .item-name").all_inner_texts()
    assert names == [call.function.name for call in calls]
    expect(page.locator("[data-output] .placeholder")).to_have_count(0)
    page.close()


def test_a_background_requests_queued_answer_says_so(alice, live_app, client):
    context, api = alice
    page, errors = new_page(context)
    raw = client.responses.with_raw_response.create(model="sim-text", input="hi", background=True, metadata=FAST)
    answer = raw.parse()
    assert answer.status in ("queued", "in_progress")
    check_run_page(page, errors, api, live_app["url"], run_id_of(raw), [], "gateway-body-background")
    outcome = page.locator(".item-outcome")
    expect(outcome).to_be_visible()
    expect(outcome.locator(".outcome-title")).to_have_text(
        "Response queued" if answer.status == "queued" else "Response in progress")
    expect(outcome).to_contain_text(answer.id)
    screenshot(page, "gateway-body-background")
    assert errors == []
    page.close()
