"""In the browser: the live timeline, replay at a position from the URL, a four-way compare, fan-out."""

import json
import re
import time

import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot

pytestmark = pytest.mark.e2e


def api_post(page, live_app, url, body):
    csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "csrftoken")
    response = page.request.post(live_app["url"] + url, data=json.dumps(body),
                                 headers={"Content-Type": "application/json", "X-CSRFToken": csrf})
    assert response.ok, response.text()
    return response.json()


def start_run(page, live_app, model="sim-text", tokens_per_s="400", tokens="60", seed="4"):
    return api_post(page, live_app, "/api/runs/", {
        "provider": "simulator", "model": model, "input": f"Tell me about {model}",
        "params": {"metadata": {"sim_tokens_per_s": tokens_per_s, "sim_tokens": tokens, "sim_seed": seed}}})


def finished_run(page, live_app, **kwargs):
    created = start_run(page, live_app, **kwargs)
    for _ in range(400):
        run = page.request.get(f"{live_app['url']}/api/runs/{created['id']}/").json()
        if run["status"] not in ("queued", "streaming"):
            return run
        time.sleep(0.05)
    raise AssertionError("run did not finish")


def timeline_events(page):
    return int(page.locator("[data-timeline]").first.get_attribute("data-events") or 0)


def test_live_timeline_grows_and_selects_events(page_factory, live_app):
    page = page_factory()
    page.select_option("[data-provider]", "simulator")
    page.select_option("[data-model]", "sim-reasoning-summary")
    page.click(".instructions summary")
    page.fill("input[name=sim_tokens_per_s]", "30")
    page.fill("[data-input]", "How does a timeline help?")
    page.press("[data-input]", "Control+Enter")
    expect(page.locator("[data-status]")).to_have_text("streaming", timeout=10_000)
    expect(page.locator("[data-timeline]")).to_have_attribute("data-events", re.compile(r"^[1-9]\d+$"), timeout=10_000)
    first = timeline_events(page)
    page.wait_for_timeout(1200)
    assert timeline_events(page) > first  # it grows while the run streams
    expect(page.locator(".legend-item", has_text="Reasoning summary")).to_be_visible()
    screenshot(page, "timeline-live-mid-stream")

    expect(page.locator("[data-status]")).to_have_text("completed", timeout=60_000)
    count = int(page.locator('[data-metric="events"]').inner_text())
    expect(page.locator("[data-timeline]")).to_have_attribute("data-events", str(count))
    expect(page.locator('[data-gap="p50"]')).to_have_text(re.compile(r"\d+(\.\d)? ms"))

    # Hover a mark in the reasoning lane (the second lane): details appear; click selects it.
    canvas = page.locator("[data-timeline-canvas]")
    box = canvas.bounding_box()
    y = box["y"] + 26 + 22 + 11
    found = False
    for fraction in [i / 60 for i in range(8, 60)]:
        page.mouse.move(box["x"] + 128 + (box["width"] - 138) * fraction, y)
        if page.locator("[data-timeline-tip]").is_visible():
            found = True
            break
    assert found, "no mark answered the hover"
    tip = page.locator("[data-timeline-tip]").inner_text()
    assert re.search(r"response\.\S+\n#\d+ · [\d.]+ (ms|s)", tip), tip
    seq = int(re.search(r"#(\d+)", tip).group(1))
    page.mouse.click(box["x"] + 128 + (box["width"] - 138) * fraction, y)
    expect(page.locator("[data-raw-title]")).to_contain_text(f"#{seq} ·")
    expect(page.locator(".event-row.selected")).to_contain_text(str(seq))
    screenshot(page, "timeline-finished")

    # Zoom in with the button and the wheel, then back to the whole run.
    page.click("[data-zoom='in']")
    page.mouse.move(box["x"] + box["width"] / 2, y)
    page.mouse.wheel(0, -300)
    page.click("[data-zoom='fit']")
    with page.expect_download() as png:
        page.click("[data-export='png']")
    assert png.value.suggested_filename.endswith("-timeline.png")
    assert open(png.value.path(), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with page.expect_download() as svg:
        page.click("[data-export='svg']")
    text = open(svg.value.path(), encoding="utf-8").read()
    assert text.startswith("<svg") and "first token" in text and "reasoning" in text
    assert page_factory.console_errors == []


def test_replay_opens_at_the_position_in_the_url_and_steps(page_factory, live_app):
    page = page_factory()
    run = finished_run(page, live_app, tokens="40")
    total = run["event_count"]
    page.goto(f"{live_app['url']}/runs/{run['id']}/replay/?speed=2&at=seq10")
    expect(page.locator("[data-replay-bar]")).to_have_attribute("data-ready", "true")
    expect(page.locator("[data-event-count]")).to_have_text("(11)")
    expect(page.locator("[data-position]")).to_contain_text(f"11 / {total} events")
    expect(page.locator("[data-speed]")).to_have_value("2")
    expect(page.locator("[data-status]")).to_have_text("streaming")
    screenshot(page, "replay-at-seq10")

    page.click("[data-step='1']")
    expect(page.locator("[data-event-count]")).to_have_text("(12)")
    expect(page).to_have_url(re.compile(r"at=seq11"))
    page.click("[data-step='-1']")
    page.click("[data-step='-1']")
    expect(page.locator("[data-event-count]")).to_have_text("(10)")
    expect(page).to_have_url(re.compile(r"at=seq9"))

    # Jump to the next text delta.
    page.select_option("[data-jump-type]", "response.output_text.delta")
    page.click("[data-jump]")
    expect(page).to_have_url(re.compile(r"at=seq\d+"))
    seq = int(re.search(r"at=seq(\d+)", page.url).group(1))
    expect(page.locator("[data-raw-panel]")).to_be_visible()
    page.locator("[data-viewport]").evaluate("el => el.scrollTop = el.scrollHeight")
    expect(page.locator(f'.event-row[data-index="{seq}"]')).to_contain_text("response.output_text.delta")

    # Play to the end at max speed: the final status and every event.
    page.select_option("[data-speed]", "max")
    page.click("[data-play]")
    expect(page.locator("[data-status]")).to_have_text("completed")
    expect(page.locator("[data-event-count]")).to_have_text(f"({total})")
    expect(page.locator("[data-play]")).to_have_text("↺ Replay")

    # Play and pause slowly: the position moves, and a reload opens at the same moment.
    page.select_option("[data-speed]", "0.25")
    page.click("[data-play]")
    page.wait_for_timeout(400)
    page.click("[data-play]")
    expect(page.locator("[data-play]")).to_have_text("▶ Play")
    shown = page.locator("[data-event-count]").inner_text()
    # The paused position (not the end the previous play reached) is what the URL now holds.
    expect(page).to_have_url(re.compile(rf"at=(?!seq{total - 1}\b)(seq\d+|[\d.]+ms)"))
    page.reload()
    expect(page.locator("[data-replay-bar]")).to_have_attribute("data-ready", "true")
    expect(page.locator("[data-event-count]")).to_have_text(shown)
    assert page_factory.console_errors == []

    stranger = page_factory("mallory", "mallory-pass-123")
    assert stranger.goto(f"{live_app['url']}/runs/{run['id']}/replay/").status == 404


def test_four_way_compare_from_the_run_list(page_factory, live_app):
    page = page_factory()
    models = ["sim-text", "sim-reasoning-summary", "sim-function-calls", "sim-web-search"]
    runs = [finished_run(page, live_app, model=m, tokens_per_s=str(150 + 50 * i), tokens="50")
            for i, m in enumerate(models)]
    page.goto(live_app["url"] + "/runs/")
    expect(page.locator("[data-compare-selected]")).to_be_disabled()
    for run in runs:
        page.check(f"[data-compare-pick][value='{run['id']}']")
    page.click("[data-compare-selected]")
    ids = ",".join(str(r["id"]) for r in runs)
    expect(page).to_have_url(re.compile(rf"/compare/\?runs={ids}$"))
    expect(page.locator(".compare-timeline")).to_have_count(4)
    expect(page.locator("[data-replay-toggle]")).to_be_enabled(timeout=15_000)
    for run in runs:
        expect(page.locator(f"[data-compare-col][data-run-id='{run['id']}'] [data-status]")).to_have_text("completed")
        expect(page.locator(f"[data-metrics-table] tr[data-metric='events'] td[data-run='{run['id']}']")) \
            .to_contain_text(str(run["event_count"]))
    expect(page.locator("[data-diff-tabs] button")).to_have_count(3)
    expect(page.locator("[data-word-diff] ins").first).to_be_visible()
    expect(page.locator("[data-counts-table]")).to_contain_text("response.function_call_arguments.delta")
    screenshot(page, "compare-four-way")

    page.click("[data-align='first_token']")
    expect(page).to_have_url(re.compile("align=first_token"))
    page.click("[data-replay-toggle]")
    expect(page.locator("[data-replay-bar]")).to_be_visible()
    page.click("[data-play]")
    page.wait_for_timeout(300)
    page.click("[data-play]")
    expect(page).to_have_url(re.compile(r"at=-?[\d.]+ms"))
    screenshot(page, "compare-four-way-replay")
    with page.expect_download() as svg:
        page.click("[data-export-cumulative='svg']")
    assert open(svg.value.path(), encoding="utf-8").read().startswith("<svg")
    assert page_factory.console_errors == []

    stranger = page_factory("mallory", "mallory-pass-123")
    assert stranger.goto(f"{live_app['url']}/compare/?runs={ids}").status == 404


def test_fan_out_opens_the_compare_view_live(page_factory, live_app):
    page = page_factory()
    page.select_option("[data-provider]", "simulator")
    page.click(".instructions summary")
    page.fill("input[name=sim_tokens_per_s]", "40")
    page.fill("[data-input]", "One prompt, three variants")
    page.click(".fanout summary")
    expect(page.locator("[data-variant]")).to_have_count(2)
    page.click("[data-variant-add]")
    third = page.locator("[data-variant]").nth(2)
    third.locator("[data-v-model]").select_option("sim-reasoning-summary")
    third.locator("[data-v-instructions]").fill("Think first.")
    expect(page.locator("[data-fanout-send]")).to_have_text("Send to 3 variants")
    page.press("[data-input]", "Control+Enter")
    expect(page).to_have_url(re.compile(r"/compare/\?runs=\d+,\d+,\d+&group=\d+"), timeout=10_000)
    expect(page.locator(".compare-timeline")).to_have_count(3)
    expect(page.locator(".live-tag").first).to_be_visible(timeout=10_000)
    expect(page.locator("[data-compare-col] [data-status]", has_text="streaming").first).to_be_visible()
    for panel in page.locator(".compare-timeline [data-timeline]").all():  # every run is streaming in
        expect(panel).to_have_attribute("data-events", re.compile(r"^[1-9]\d+$"), timeout=15_000)
    page.wait_for_timeout(300)
    screenshot(page, "fanout-compare-live")
    expect(page.locator("[data-replay-toggle]")).to_be_enabled(timeout=60_000)
    expect(page.locator(".live-tag")).to_have_count(0)
    expect(page.locator(".compare-col-title").nth(2)).to_contain_text("“Think first.”")
    group = re.search(r"group=(\d+)", page.url).group(1)
    page.goto(live_app["url"] + "/runs/")
    expect(page.locator(f".groups-strip a[href='/compare/?group={group}']")).to_be_visible()
    expect(page.locator(f"a.group-link[href='/compare/?group={group}']")).to_have_count(3)
    assert page_factory.console_errors == []
