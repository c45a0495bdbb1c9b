"""In the browser: find runs with the filters and search, then open insights and follow a chart point
and a table row back to the runs list, filtered to them."""

import json
import re

import pytest
from playwright.sync_api import expect

from tests.support.servers import manage

pytestmark = pytest.mark.e2e

MODEL_A, MODEL_B = "fleet-e2e-a", "fleet-e2e-b"  # kept apart from other tests' runs by model


def make_runs(live_app):
    code = f"""
import json
from django.contrib.auth.models import User
from streams.models import Run
alice = User.objects.get(username='alice')
ids = {{}}
specs = [('{MODEL_A}', 'Why is the sky blue?', 'Rayleigh scattering', 120.0, 'completed'),
         ('{MODEL_A}', 'Write a haiku about rain', 'Drops on the window', 340.0, 'completed'),
         ('{MODEL_A}', 'Why is the sea blue?', 'It reflects the sky', 200.0, 'failed'),
         ('{MODEL_B}', 'Why is grass green?', 'Chlorophyll', 90.0, 'completed')]
for model, text, output, ttft, status in specs:
    run = Run.objects.create(owner=alice, provider='simulator', model=model, status=status,
                             request={{'model': model, 'input': text, 'stream': True}}, output_text=output,
                             ttft_ms=ttft, duration_ms=ttft + 800, tokens_per_s=40.0,
                             metrics={{'ttft_ms': ttft, 'ttfd_ms': ttft, 'duration_ms': ttft + 800}})
    ids[text] = run.pk
print(json.dumps(ids))
"""
    return json.loads(manage(live_app["var_dir"], "shell", "-c", code).strip().splitlines()[-1])


def shown_ids(page):
    return [int(x) for x in page.locator("[data-run-row]").evaluate_all("rows => rows.map(r => r.dataset.runRow)")]


def test_filter_search_then_insights_to_filtered_runs(page_factory, live_app):
    ids = make_runs(live_app)
    page = page_factory()
    page.goto(live_app["url"] + "/runs/")
    page.fill("[data-filter-model]", MODEL_A)
    page.fill("[data-filter-q]", "why blue")
    page.select_option("[data-filter-sort]", "ttft_ms")
    page.click("[data-filter-apply]")
    expect(page.locator("[data-run-row]")).to_have_count(2)
    assert shown_ids(page) == [ids["Why is the sky blue?"], ids["Why is the sea blue?"]]  # fastest first
    # The URL holds the whole state: reloading shows the same.
    assert re.search(r"q=why\+blue", page.url) and f"model={MODEL_A}" in page.url and "sort=ttft_ms" in page.url
    page.reload()
    assert shown_ids(page) == [ids["Why is the sky blue?"], ids["Why is the sea blue?"]]
    page.select_option("[data-filter-status]", "failed")
    page.click("[data-filter-apply]")
    assert shown_ids(page) == [ids["Why is the sea blue?"]]

    page.click("[data-insights-link]")
    page.wait_for_url(re.compile(r"/insights/"))
    row = page.locator(f"[data-group-row='{MODEL_A}']")
    expect(row).to_be_visible()
    cells = row.locator("td").all_inner_texts()
    assert cells[1] == "3" and cells[2] == "200 ms"  # runs and TTFT p50 of model A
    # A chart point: the only bucket of the day, for both models; the nearest is today's.
    canvas = page.locator("canvas[data-chart='ttft_ms']")
    box = canvas.bounding_box()
    canvas.click(position={"x": box["width"] - 14, "y": box["height"] / 2})
    page.wait_for_url(re.compile(r"/runs/\?"))
    assert "since=" in page.url and "until=" in page.url
    listed = set(shown_ids(page))
    assert ids["Why is the sky blue?"] in listed or ids["Why is grass green?"] in listed

    page.go_back()
    page.locator(f"[data-group-row='{MODEL_A}'] td").nth(3).click()
    page.wait_for_url(re.compile(rf"/runs/\?model={MODEL_A}"))
    assert set(shown_ids(page)) == {ids["Why is the sky blue?"], ids["Why is the sea blue?"],
                                    ids["Write a haiku about rain"]}
    assert not page_factory.console_errors
