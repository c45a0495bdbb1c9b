"""Timeline benchmark: how fast a big stored run becomes interactive, and how smooth a fast live one is.

Creates a temporary database with a 20,000-event run (direct inserts: a reasoning item, a message
and a function call, ~6 ms apart), serves it with a real Daphne and opens it in headless Chromium:

  1. run page   - navigation start → every event drawn on the timeline and the run shown as
                  completed; then "interactive": a hover answered with its tooltip, a click
                  selecting the event in the list (each measured on its own);
  2. replay     - /runs/<id>/replay/?at=end → ready, and a step back (a full rebuild);
  3. zoom       - 20 wheel zooms on the timeline: frame time while redrawing 20k events;
  4. live       - a simulator run at 3,000 tokens/s watched on the run page: frame intervals
                  while it streams (p50/p95/max, frames longer than 50 ms).
Figures are printed; nothing is asserted (tests never time things).

    .venv/bin/python bench/timeline.py [--events 20000] [--live-tokens 15000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORK = Path(tempfile.mkdtemp(prefix="streamscope-timeline-bench-"))
os.environ["STREAMSCOPE_VAR_DIR"] = str(WORK)
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
os.environ.setdefault("STREAMSCOPE_LOG_LEVEL", "WARNING")

import django  # noqa: E402

from tests.support.servers import start_daphne, stop_process  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
PASSWORD = "bench-pass-123"

# Frame intervals measured in the page with requestAnimationFrame.
FRAME_PROBE = """
window.__frames = []; (function loop(last) { requestAnimationFrame((now) => {
  window.__frames.push(now - last); if (!window.__stopFrames) loop(now); }); })(performance.now());
"""


def event(seq: int, t: float, payload: dict) -> tuple[int, float, str, str]:
    payload = {**payload, "sequence_number": seq}
    return seq, t, payload["type"], json.dumps(payload, separators=(",", ":"))


def synthetic_events(count: int) -> list[tuple[int, float, str, str]]:
    """A reasoning summary, a message and a function call, one token delta every ~6 ms."""
    resp = {"id": "resp_bench", "object": "response", "status": "in_progress", "model": "bench", "output": []}
    rows = [event(0, 180.0, {"type": "response.created", "response": resp}),
            event(1, 181.0, {"type": "response.in_progress", "response": resp})]
    deltas = count - 16
    parts = [("reasoning", deltas // 5), ("message", deltas * 3 // 5),
             ("function_call", deltas - deltas // 5 - deltas * 3 // 5)]
    t = 240.0
    for index, (kind, n) in enumerate(parts):
        item_id = f"{kind[:2]}_{index}"
        rows.append(event(len(rows), t, {"type": "response.output_item.added", "output_index": index,
                                         "item": {"type": kind, "id": item_id, "status": "in_progress"}}))
        delta_type = {"reasoning": "response.reasoning_summary_text.delta", "message": "response.output_text.delta",
                      "function_call": "response.function_call_arguments.delta"}[kind]
        if kind == "message":
            rows.append(event(len(rows), t, {"type": "response.content_part.added", "output_index": index,
                                             "item_id": item_id,
                                             "content_index": 0, "part": {"type": "output_text", "text": ""}}))
        for i in range(n):
            t += 4.0 + (i * 7919 % 5) + (60.0 if i % 997 == 0 else 0.0)
            rows.append(event(len(rows), t, {"type": delta_type, "output_index": index, "item_id": item_id,
                                             "content_index": 0, "delta": f"w{i} "}))
        rows.append(event(len(rows), t, {"type": "response.output_item.done", "output_index": index,
                                         "item": {"type": kind, "id": item_id, "status": "completed"}}))
    while len(rows) < count - 1:
        rows.append(event(len(rows), t, {"type": "response.output_text.done", "output_index": 1, "item_id": "me_1",
                                         "content_index": 0, "text": ""}))
    final = {**resp, "status": "completed", "usage": {"output_tokens": deltas}}
    rows.append(event(len(rows), t + 2, {"type": "response.completed", "response": final}))
    return rows


def create_run(count: int) -> int:
    from django.contrib.auth import get_user_model
    from django.core.management import call_command

    from streams.models import Run
    from streams.pipeline import store
    from streams.protocol.metrics import compute_metrics

    call_command("migrate", verbosity=0)
    user = get_user_model().objects.create_user("bench", password=PASSWORD)
    rows = synthetic_events(count)
    run = Run.objects.create(owner=user, provider="simulator", model="bench", status="completed",
                             request={"model": "bench", "input": "a very long answer", "stream": True})
    for start in range(0, len(rows), 2000):
        store.append_events(run.pk, [(run.pk, *row) for row in rows[start:start + 2000]])
    metrics = compute_metrics((t, kind, json.loads(data), len(data)) for _, t, kind, data in rows)
    Run.objects.filter(pk=run.pk).update(event_count=len(rows), metrics=metrics, output_text="…")
    return run.pk


def login(page, base_url: str) -> None:
    page.goto(base_url + "/accounts/login/")
    page.fill("input[name=username]", "bench")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base_url + "/")


def run_page(page, base_url: str, run_id: int, count: int) -> dict:
    page.goto(f"{base_url}/runs/{run_id}/", wait_until="commit")
    page.wait_for_function(
        f"document.querySelector('[data-timeline]')?.dataset.events === '{count}'"
        " && document.querySelector('[data-runview]').dataset.state === 'completed'", timeout=60_000, polling="raf")
    drawn = page.evaluate("performance.now()")
    dom = page.evaluate("performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd")
    # Hover where the densest lane is, then click: both must answer.
    box = page.locator("[data-timeline-canvas]").bounding_box()
    x, y = box["x"] + box["width"] * 0.5, box["y"] + 26 + 22 * 2 + 11
    t0 = page.evaluate("performance.now()")
    page.mouse.move(x, y)
    page.wait_for_selector("[data-timeline-tip]:not([hidden])", timeout=10_000)
    hover_ms = page.evaluate("performance.now()") - t0
    t0 = page.evaluate("performance.now()")
    page.mouse.click(x, y)
    page.wait_for_function("document.querySelector('[data-raw]').textContent.length > 0", polling="raf")
    click_ms = page.evaluate("performance.now()") - t0
    return {"dom": dom, "drawn": drawn, "interactive": drawn + hover_ms, "hover": hover_ms, "click": click_ms}


def replay_page(page, base_url: str, run_id: int, count: int) -> dict:
    page.goto(f"{base_url}/runs/{run_id}/replay/?at=end", wait_until="commit")
    page.wait_for_selector("[data-replay-bar][data-ready]", timeout=60_000)
    ready = page.evaluate("performance.now()")
    t0 = page.evaluate("performance.now()")
    page.click("[data-step='-1']")
    page.wait_for_function(f"document.querySelector('[data-event-count]').textContent === '({count - 1})'",
                           polling="raf")
    return {"ready": ready, "step_back": page.evaluate("performance.now()") - t0}


def zoom_frames(page) -> list[float]:
    box = page.locator("[data-timeline-canvas]").bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.6, box["y"] + 40)
    page.evaluate(FRAME_PROBE)
    for i in range(20):
        page.mouse.wheel(0, -120 if i < 10 else 120)
        page.wait_for_timeout(30)
    page.evaluate("window.__stopFrames = true")
    return page.evaluate("window.__frames")


def live_frames(page, base_url: str, tokens: int) -> tuple[list[float], int, float]:
    page.goto(base_url + "/")
    token = page.context.cookies()
    csrf = next(c["value"] for c in token if c["name"] == "csrftoken")
    body = {"provider": "simulator", "model": "sim-text", "input": "fast",
            "params": {"metadata": {"sim_tokens_per_s": "3000", "sim_tokens": str(tokens), "sim_seed": "1"}}}
    created = page.request.post(base_url + "/api/runs/", data=json.dumps(body),
                                headers={"Content-Type": "application/json", "X-CSRFToken": csrf}).json()
    page.goto(base_url + created["url"])
    page.evaluate(FRAME_PROBE)
    started = time.monotonic()
    page.wait_for_function("document.querySelector('[data-runview]').dataset.state === 'completed'",
                           timeout=120_000, polling=200)
    seconds = time.monotonic() - started
    page.evaluate("window.__stopFrames = true")
    frames = page.evaluate("window.__frames")
    events = int(page.evaluate("document.querySelector('[data-timeline]').dataset.events"))
    return frames, events, seconds


def describe(frames: list[float]) -> str:
    ordered = sorted(frames)
    if not ordered:
        return "no frames"
    pick = lambda f: ordered[min(len(ordered) - 1, int(f * len(ordered)))]  # noqa: E731
    long = sum(1 for f in ordered if f > 50)
    return (f"{len(ordered)} frames · p50 {pick(0.5):.1f} ms · p95 {pick(0.95):.1f} ms · max {ordered[-1]:.1f} ms"
            f" · {long} longer than 50 ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--live-tokens", type=int, default=15_000)
    args = parser.parse_args()
    django.setup()
    run_id = create_run(args.events)
    process, base_url = start_daphne(WORK)
    from playwright.sync_api import sync_playwright

    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            # The probes are strings Playwright evaluates; the pages themselves never need eval.
            page = browser.new_context(viewport={"width": 1280, "height": 800}, bypass_csp=True).new_page()
            login(page, base_url)
            run_page(page, base_url, run_id, args.events)  # warm the server and caches once
            runs = [run_page(page, base_url, run_id, args.events) for _ in range(3)]
            zoom = zoom_frames(page)
            replay = [replay_page(page, base_url, run_id, args.events) for _ in range(2)]
            frames, live_events, live_s = live_frames(page, base_url, args.live_tokens)
            browser.close()
    finally:
        stop_process(process)
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.node()} · {os.cpu_count()} cores · {chromium} (headless) · 1280x800")
    print(f"stored run: {args.events} events")
    for i, r in enumerate(runs, 1):
        print(f"  run page #{i}: DOM ready {r['dom']:.0f} ms · all events drawn {r['drawn']:.0f} ms · "
              f"hover answered +{r['hover']:.0f} ms · click selects +{r['click']:.0f} ms"
              f" → interactive {r['interactive']:.0f} ms")
    best = min(r["interactive"] for r in runs)
    print(f"  time to interactive (best of {len(runs)}): {best:.0f} ms (target < 1000 ms)")
    for i, r in enumerate(replay, 1):
        print(f"  replay page #{i}: ready at the end {r['ready']:.0f} ms"
              f" · one step back (full rebuild) {r['step_back']:.0f} ms")
    print(f"  wheel zoom on {args.events} events: {describe(zoom)}")
    print(f"live run at 3,000 tokens/s: {live_events} events in {live_s:.1f} s"
          f" ({live_events / live_s:,.0f} events/s seen)")
    print(f"  frame intervals while streaming: {describe(frames)}")


if __name__ == "__main__":
    main()
