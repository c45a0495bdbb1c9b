"""Every event family in the browser: each simulator scenario (Responses and Chat Completions)
and each shared recording (imported through the upload form) renders without console errors,
shows the item kinds it should, and the output text on the page equals the API's output_text.
A live run's text, followed delta by delta, ends equal to what was stored."""

from __future__ import annotations

import re
import time

import httpx
import pytest
from playwright.sync_api import expect

from simulator.scenarios import SCENARIOS
from tests.support.browser import screenshot
from tests.support.servers import RECORDINGS, manage

pytestmark = pytest.mark.e2e

TERMINAL = {"completed", "incomplete", "failed", "cancelled", "interrupted"}
# The page's rebuilt output text: every message's output_text parts, in order (footnote
# markers are CSS-generated, so textContent is the text alone).
PAGE_TEXT = ("() => [...document.querySelectorAll('.item-message [data-text-part=output_text]')]"
             ".map(e => e.textContent).join('')")
ERROR_BANNER = "[data-error]"

# What each scenario must show (CSS selectors that must match at least once).
SCENARIO_KINDS = {
    "sim-text": [".item-message .text"],
    "sim-text-multipart": [".item-message .part-output_text.multi[data-n='3']"],
    "sim-logprobs": [".item-message .token-toggle input"],
    "sim-refusal": [".item-message .part-refusal .refusal"],
    "sim-function-calls": [".item-function_call .code.json", ".item-function_call .item-name"],
    "sim-custom-tool": [".item-custom_tool_call pre.code"],
    "sim-reasoning-summary": [".item-reasoning .summary-title", ".item-message"],
    "sim-reasoning-text": [".item-reasoning .reasoning-text", ".item-message"],
    "sim-web-search": [".item-reasoning", ".item-web_search_call .query", ".item-message .cite-ref a[href^='#cite-']",
                       ".citations a[rel='noopener noreferrer nofollow']"],
    "sim-file-search": [".item-file_search_call .query", ".item-message .cite-ref", ".citations .c-file_citation"],
    "sim-code-interpreter": [".item-code_interpreter_call pre.code", ".item-code_interpreter_call .s-completed"],
    "sim-image-generation": [".item-image_generation_call img.generated[src^='data:image/png;base64,']"],
    "sim-mcp": [".item-mcp_list_tools .tool-list li", ".item-mcp_list_tools .item-error", ".item-mcp_call .item-error",
                ".item-mcp_call .output-log"],
    "sim-shell": [".item-shell_call .shell-command", ".item-shell_call_output .output-log",
                  ".item-shell_call_output .shell-exit"],
    "sim-compaction": [".item-compaction"],
    "sim-audio": [".item-audio .audio-transcript", ".item-message"],
    "sim-apply-patch": [".item-apply_patch_call .d-add", ".item-apply_patch_call .d-del"],
    "sim-incomplete": [".item-outcome.outcome-incomplete"],
    "sim-failed": [".item-message", ".item-outcome.outcome-failed"],
    "sim-quota-exceeded": [".item-outcome.outcome-failed"],
}
SCENARIO_KINDS["sim-all-families"] = sorted({
    selector for name in ("sim-text-multipart", "sim-refusal", "sim-function-calls", "sim-custom-tool",
                          "sim-reasoning-summary", "sim-reasoning-text", "sim-web-search", "sim-file-search",
                          "sim-code-interpreter", "sim-image-generation", "sim-mcp", "sim-shell", "sim-compaction",
                          "sim-audio", "sim-apply-patch")
    for selector in SCENARIO_KINDS[name] if "data-n" not in selector
})
CHAT_KINDS = {
    "text": [".item-message.chat .text"],
    "logprobs": [".item-message.chat .token-toggle input"],
    "refusal": [".item-message.chat .refusal"],
    "tools": [".item-function_call.chat .code.json"],
    "failed": [".item-outcome.outcome-failed"],
}
RECORDING_KINDS = {
    "background-resume-starting-after-0.sse": [".item-message"],
    "background-stream.sse": [".item-message"],
    "error-event-then-failed.sse": [".item-outcome.outcome-failed"],
    "file-search-with-citation.sse": [".item-file_search_call", ".item-message .cite-ref",
                                      ".citations .c-file_citation"],
    "function-call-2025-03-no-sequence-numbers.sse": [".item-function_call .code.json"],
    "http-400-error-body.json": [],
    "incomplete-max-output-tokens.sse": [".item-reasoning", ".item-outcome.outcome-incomplete"],
    "openrouter-reasoning-text-and-done-marker.sse": [".item-reasoning .reasoning-text", ".item-message"],
    "reasoning-summary-then-text.sse": [".item-reasoning .summary-title", ".item-message"],
    "text-with-logprobs.sse": [".item-message .token-toggle input"],
    "web-search-with-reasoning.sse": [".item-reasoning", ".item-web_search_call .query", ".item-message"],
}
# Scenarios that end in a usable run (HTTP errors are covered below, by the banner alone).
RENDERED = [s for s in SCENARIOS if s.outcome in ("completed", "incomplete", "failed", "dropped", "stalled")]
CHAT = [s for s in RENDERED if s.chat and s.outcome in ("completed", "incomplete", "failed")]


def recording_files():
    return sorted(p.name for p in RECORDINGS.iterdir() if p.suffix in (".sse", ".json"))


@pytest.fixture(scope="module")
def alice(browser, live_app):
    """A logged-in browser context and an API client sharing its session."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(live_app["url"] + "/accounts/login/")
    page.fill("input[name=username]", "alice")
    page.fill("input[name=password]", "alice-pass-123")
    page.click("button[type=submit]")
    page.wait_for_url(live_app["url"] + "/")
    page.close()
    cookies = {c["name"]: c["value"] for c in context.cookies()}
    api = httpx.Client(base_url=live_app["url"], cookies=cookies, headers={"X-CSRFToken": cookies["csrftoken"]},
                       timeout=30)
    yield context, api
    api.close()
    context.close()


def new_page(context):
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(f"pageerror: {exc}"))
    return page, errors


def wait_finished(api, run_id, timeout=60.0):
    deadline = time.monotonic() + timeout
    found = None
    while time.monotonic() < deadline:
        found = api.get(f"/api/runs/{run_id}/")
        # A gateway run with a reserved id has its row written just after its answer goes out
        # (docs/gateway.md): its id can be named before the row is there.
        if found.status_code == 200 and found.json()["status"] in TERMINAL:
            return found.json()
        time.sleep(0.1)
    last = f"HTTP {found.status_code}: {found.text[:200]}" if found is not None else "no answer"
    raise AssertionError(f"run {run_id} did not finish within {timeout}s (last: {last})")


def start(api, provider, model, **metadata):
    body = {"provider": provider, "model": model, "input": "Tell me about streams & <b>tags</b>",
            "params": {"metadata": {"sim_tokens_per_s": "0", "sim_seed": "11", **metadata}}}
    response = api.post("/api/runs/", json=body)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def check_run_page(page, errors, api, url, run_id, selectors, name):
    detail = wait_finished(api, run_id)
    page.goto(f"{url}/runs/{run_id}/")
    expect(page.locator("[data-status]")).to_have_text(detail["status"], timeout=15_000)
    expect(page.locator("[data-event-count]")).to_have_text(f"({detail['event_count']})")
    for selector in selectors:
        expect(page.locator(selector).first).to_be_attached()
    if detail["status"] == "failed":
        expect(page.locator(ERROR_BANNER)).to_be_visible()
        expect(page.locator(ERROR_BANNER)).to_contain_text(detail["error"]["message"][:40])
    assert page.evaluate(PAGE_TEXT) == (detail["output_text"] or ""), name
    # Items are in output order, whatever order their events came in.
    indexes = [int(t.lstrip("#")) for t in page.locator("[data-output] > .item .item-index").all_inner_texts() if t]
    assert indexes == sorted(indexes), name
    page.evaluate("() => { const o = document.querySelector('[data-output]'); if (o) o.style.maxHeight = 'none'; }")
    screenshot(page, f"family-{name}")
    assert errors == [], name
    return detail


def test_the_simulator_lists_every_scenario_this_test_covers(live_app):
    # The simulator answers a person's API token (and refuses strangers: tests/dashboard/test_simulator_gate.py).
    token = manage(live_app["var_dir"], "create_token", "alice").strip().splitlines()[-1]
    answer = httpx.get(live_app["url"] + "/sim/v1/models", headers={"Authorization": f"Bearer {token}"})
    listed = {m["id"] for m in answer.json()["data"]}
    assert listed == {s.id for s in SCENARIOS}


@pytest.mark.parametrize("scenario", RENDERED, ids=lambda s: s.id)
def test_scenario_renders_every_family(alice, live_app, scenario):
    context, api = alice
    page, errors = new_page(context)
    extra = {"sim_stall_ms": "300"} if scenario.outcome == "stalled" else {}
    run_id = start(api, "simulator", scenario.id, **extra)
    selectors = SCENARIO_KINDS.get(scenario.id, [".item"] if scenario.outcome == "completed" else [])
    detail = check_run_page(page, errors, api, live_app["url"], run_id, selectors, scenario.id.removeprefix("sim-"))
    if scenario.outcome in ("completed", "incomplete", "failed"):
        assert detail["status"] == scenario.outcome
    page.close()


@pytest.mark.parametrize("scenario", CHAT, ids=lambda s: s.id)
def test_chat_completions_scenario_renders_as_messages_and_tool_calls(alice, live_app, scenario):
    context, api = alice
    page, errors = new_page(context)
    run_id = start(api, "simulator-chat", scenario.id)
    check_run_page(page, errors, api, live_app["url"], run_id, CHAT_KINDS[scenario.chat],
                   f"chat-{scenario.id.removeprefix('sim-')}")
    page.close()


@pytest.mark.parametrize("scenario", [s for s in SCENARIOS if s.outcome == "http_error"], ids=lambda s: s.id)
def test_http_error_scenario_shows_the_error_prominently(alice, live_app, scenario):
    context, api = alice
    page, errors = new_page(context)
    run_id = start(api, "simulator", scenario.id)
    detail = check_run_page(page, errors, api, live_app["url"], run_id, [], scenario.id.removeprefix("sim-"))
    assert detail["status"] == "failed"
    expect(page.locator(ERROR_BANNER)).to_contain_text(f"HTTP {scenario.http_status}")
    page.close()


@pytest.mark.parametrize("name", recording_files())
def test_recording_imports_through_the_form_and_renders(alice, live_app, name):
    context, api = alice
    page, errors = new_page(context)
    page.goto(live_app["url"] + "/runs/")
    page.click("[data-import-link]")
    page.set_input_files("[data-import-file]", str(RECORDINGS / name))
    page.click("[data-import-submit]")
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("[data-messages]")).to_contain_text(f"from {name}")
    run_id = int(re.search(r"/runs/(\d+)/$", page.url).group(1))
    detail = check_run_page(page, errors, api, live_app["url"], run_id, RECORDING_KINDS.get(name, [".item"]),
                            f"rec-{name.rsplit('.', 1)[0]}")
    assert detail["imported"] is True
    page.close()


def test_openrouter_items_show_in_output_order_although_they_interleave(alice, live_app):
    context, api = alice
    page, errors = new_page(context)
    page.goto(live_app["url"] + "/runs/import/")
    page.set_input_files("[data-import-file]", str(RECORDINGS / "openrouter-reasoning-text-and-done-marker.sse"))
    page.click("[data-import-submit]")
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("[data-status]")).to_have_text("completed")
    expect(page.locator("[data-output] > .item-message")).to_be_attached()
    kinds = page.locator("[data-output] > .item").evaluate_all("nodes => nodes.map(n => n.className.split(' ')[1])")
    assert kinds[:2] == ["item-reasoning", "item-message"]
    page.locator(".item-reasoning summary").click()
    expect(page.locator(".item-reasoning .reasoning-text")).to_contain_text('The user asks: "What is 2+2?"')
    assert errors == []


def test_live_run_text_is_appended_in_place_and_ends_equal_to_the_stored_output(alice, live_app):
    context, api = alice
    page, errors = new_page(context)
    page.goto(live_app["url"] + "/")
    page.select_option("[data-provider]", "simulator")
    page.select_option("[data-model]", "sim-reasoning-summary")
    page.click(".instructions summary")
    page.fill("input[name=sim_tokens_per_s]", "40")
    page.fill("[data-input]", "Why do streams matter?")
    page.press("[data-input]", "Control+Enter")
    text = page.locator(".item-message [data-text-part=output_text]")
    expect(text).not_to_be_empty(timeout=20_000)
    # Remember the Text node deltas are appended to: a live text is not re-rendered per frame.
    page.evaluate("() => { window.__streamNode ="
                  " document.querySelector('.item-message [data-text-part=output_text]').lastChild; }")
    expect(page.locator("[data-status]")).to_have_text("completed", timeout=60_000)
    run_id = int(re.search(r"/runs/(\d+)/", page.locator("[data-run-link]").get_attribute("href")).group(1))
    detail = api.get(f"/api/runs/{run_id}/").json()
    assert page.evaluate(PAGE_TEXT) == detail["output_text"]
    assert page.evaluate("() => document.querySelector('.item-message [data-text-part=output_text]').lastChild"
                         " === window.__streamNode")
    # The reasoning streamed open, then folded away once done; it opens again on click.
    reasoning = page.locator(".item-reasoning details")
    expect(reasoning).not_to_have_attribute("open", "")
    page.locator(".item-reasoning summary").click()
    expect(page.locator(".item-reasoning .summary-title").first).to_be_visible()
    screenshot(page, "family-live-reasoning-summary")
    assert errors == []


def test_export_links_download_the_stream_as_it_was_recorded(alice, live_app, tmp_path):
    context, api = alice
    page, errors = new_page(context)
    source = RECORDINGS / "background-stream.sse"
    page.goto(live_app["url"] + "/runs/import/")
    page.set_input_files("[data-import-file]", str(source))
    page.click("[data-import-submit]")
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("[data-status]")).to_have_text("completed")
    with page.expect_download() as download:
        page.click("[data-export=sse]")
    assert download.value.suggested_filename.endswith(".sse")
    assert open(download.value.path(), "rb").read() == source.read_bytes()
    with page.expect_download() as download:
        page.click("[data-export=jsonl]")
    lines = open(download.value.path(), encoding="utf-8").read().splitlines()
    assert len(lines) == 1 + 17  # the run header, then one line per event
    assert errors == []
