"""History benchmark: open a stored 20,000-event run through the API and through the websocket backlog.

Records one unthrottled run of about 20,000 events, then times (median of --repeat tries):
  - GET /api/runs/<id>/ (the run's summary),
  - GET /api/runs/<id>/events/ page by page (limit 5000) until next_after is null,
  - a websocket connecting with after=-1 until it has every event and the final status,
  - GET /runs/<id>/ (the page's HTML),
and checks that each way returns every event exactly once.

    .venv/bin/python bench/history.py [--mode embedded|scaled|both] [--events 20000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from common import (
    Stack,
    Viewer,
    event_count,
    login,
    machine,
    modes_arg,
    run_body,
    selected_modes,
    start_runs,
    wait_until_ended,
)


def timed(fn, repeat: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), result


def api_pages(client, run_id: int) -> tuple[int, int, bool]:
    seqs, after, size = [], -1, 0
    while True:
        response = client.get(f"/api/runs/{run_id}/events/", params={"after": after, "limit": 5000})
        size += len(response.content)
        page = response.json()
        seqs.extend(e["seq"] for e in page["events"])
        if page["next_after"] is None:
            return len(seqs), size, seqs == list(range(len(seqs)))
        after = page["next_after"]


def websocket_backlog(stack: Stack, client, run_id: int) -> tuple[int, bool, float]:
    async def go() -> tuple[int, bool, float]:
        viewer = Viewer(stack.webs[0], dict(client.cookies), run_id)
        await viewer.watch()
        return len(viewer.seqs), viewer.seqs == list(range(len(viewer.seqs))), viewer.frames
    return asyncio.run(go())


def measure(stack: Stack, events: int, repeat: int) -> dict:
    client = login(stack.webs[0])
    [run_id] = asyncio.run(start_runs(client, [run_body(events - 8, "0", stamp=False)]))
    wait_until_ended(client, [run_id])
    status, count = event_count(client, run_id)
    summary_ms, _ = timed(lambda: client.get(f"/api/runs/{run_id}/").raise_for_status(), repeat)
    api_ms, (api_count, api_bytes, api_ok) = timed(lambda: api_pages(client, run_id), repeat)
    ws_ms, (ws_count, ws_ok, ws_frames) = timed(lambda: websocket_backlog(stack, client, run_id), repeat)
    page_ms, _ = timed(lambda: client.get(f"/runs/{run_id}/").raise_for_status(), repeat)
    return {"status": status, "events": count, "summary": summary_ms, "api": api_ms,
            "api_ok": api_ok and api_count == count,
            "api_mb": api_bytes / 1e6, "ws": ws_ms, "ws_ok": ws_ok and ws_count == count, "ws_frames": ws_frames,
            "page": page_ms}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    modes_arg(parser)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"history: a stored run of ~{args.events} events, median of {args.repeat} opens")
    for mode in selected_modes(args.mode):
        with Stack(mode) as stack:
            r = measure(stack, args.events, args.repeat)
        print(f"  {stack.describe()}")
        print(f"    run {r['status']}, {r['events']} events ({r['api_mb']:.1f} MB of JSON)")
        print(f"    API summary GET /api/runs/<id>/          {r['summary']:8.1f} ms")
        print(f"    API events, 5000 per page, all pages     {r['api']:8.1f} ms  "
              f"{r['events'] / r['api'] * 1000:>9,.0f} events/s  exactly once: {r['api_ok']}")
        print(f"    websocket backlog until final status     {r['ws']:8.1f} ms  "
              f"{r['events'] / r['ws'] * 1000:>9,.0f} events/s  exactly once: {r['ws_ok']} ({r['ws_frames']} frames)")
        print(f"    run page HTML GET /runs/<id>/            {r['page']:8.1f} ms")


if __name__ == "__main__":
    main()
