"""A hostile stream cannot run anything: model output that carries <script>, event handlers or
javascript: links (in text, citations, sources, tool names, images, errors, malformed lines)
is shown as text, and no javascript: link, inline handler or injected element reaches the page."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot

pytestmark = pytest.mark.e2e

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(2)>"
MD_LINK = "[click me](javascript:alert(3))"


def frame(payload: dict) -> str:
    return f"event: {payload['type']}\ndata: {json.dumps(payload)}\n\n"


def hostile_stream() -> str:
    message_text = f"Hello {SCRIPT} and {IMG} and {MD_LINK} end."
    message = {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed", "content": [{
        "type": "output_text", "text": message_text, "logprobs": [],
        "annotations": [
            {"type": "url_citation", "url": "javascript:alert(4)", "title": "<img src=x onerror=alert(5)>",
             "start_index": 0, "end_index": 5},
            {"type": "url_citation", "url": " JaVaScRiPt:alert(6)", "title": "mixed case",
             "start_index": 0, "end_index": 10},
            {"type": "url_citation", "url": "https://example.com/ok", "title": "a fine source",
             "start_index": 0, "end_index": 12},
            {"type": "file_citation", "file_id": "file-1", "filename": "<script>alert(7)</script>", "index": 20},
        ],
    }]}
    events = [
        {"type": "response.created",
         "response": {"id": "resp_x", "model": "evil-1", "status": "in_progress", "output": []}},
        {"type": "response.output_item.added", "output_index": 0,
         "item": {"type": "web_search_call", "id": "ws_1", "status": "in_progress"}},
        {"type": "response.output_item.done", "output_index": 0,
         "item": {"type": "web_search_call", "id": "ws_1", "status": "completed",
         "action": {"type": "search", "query": SCRIPT, "sources": [{"type": "url", "url": "javascript:alert(8)"}]}}},
        {"type": "response.output_item.added", "output_index": 1,
         "item": {"type": "function_call", "id": "fc_1", "call_id": "c1",
         "name": "<svg onload=alert(9)>", "arguments": "", "status": "in_progress"}},
        {"type": "response.function_call_arguments.delta", "output_index": 1, "item_id": "fc_1",
         "delta": json.dumps({"html": "<script>alert(10)</script>"})},
        {"type": "response.output_item.added", "output_index": 2,
         "item": {"type": "image_generation_call", "id": "ig_1", "status": "in_progress"}},
        {"type": "response.image_generation_call.partial_image", "output_index": 2, "item_id": "ig_1",
         "partial_image_index": 0,
         "partial_image_b64": '"><script>alert(11)</script>', "output_format": 'png;base64,x" onerror="alert(12)'},
        {"type": "response.output_item.added", "output_index": 3,
         "item": {"type": "mcp_call", "id": "mcp_1", "status": "in_progress",
         "server_label": "<b>srv</b>", "name": "x", "arguments": "", "error": None, "output": None}},
        {"type": "response.mcp_call.failed", "output_index": 3, "item_id": "mcp_1"},
        {"type": "response.output_item.done", "output_index": 3,
         "item": {"type": "mcp_call", "id": "mcp_1", "status": "failed",
         "server_label": "<b>srv</b>", "name": "x", "arguments": "{}", "error": IMG, "output": None}},
        {"type": "response.output_item.done", "output_index": 4,
         "item": {"type": "code_interpreter_call", "id": "ci_1", "status": "completed",
         "code": SCRIPT, "outputs": [{"type": "image", "url": "javascript:alert(13)"}, {"type": "logs", "logs": IMG}]}},
        {"type": "response.output_item.done", "output_index": 5,
         "item": {"type": "<script>alert(14)</script>", "id": "x_1", "payload": SCRIPT}},
        {"type": "response.output_item.added", "output_index": 6,
         "item": {"type": "message", "id": "msg_1", "role": "assistant", "status": "in_progress", "content": []}},
        {"type": "response.content_part.added", "output_index": 6, "item_id": "msg_1", "content_index": 0,
         "part": {"type": "output_text", "text": "", "annotations": []}},
        {"type": "response.output_text.delta", "output_index": 6, "item_id": "msg_1", "content_index": 0,
         "delta": message_text},
        *({"type": "response.output_text.annotation.added", "output_index": 6, "item_id": "msg_1",
           "content_index": 0, "annotation_index": i,
           "annotation": note} for i, note in enumerate(message["content"][0]["annotations"])),
        {"type": "response.output_item.done", "output_index": 6, "item": message},
        {"type": "response.<script>alert(15)</script>", "note": SCRIPT},
        {"type": "error",
         "error": {"type": "server_error", "code": "<b>boom</b>", "message": "<img src=x onerror=alert(16)>"}},
    ]
    body = "".join(frame(e) for e in events)
    body += "data: <script>alert(17)</script> {not json\n\n"
    body += frame({"type": "response.failed", "response": {"id": "resp_x", "status": "failed", "output": [],
                                                            "error": {"code": "server_error", "message": IMG}}})
    return body


def test_hostile_stream_runs_nothing_and_links_nothing(page_factory, live_app, tmp_path):
    page = page_factory()
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    path = tmp_path / "hostile.sse"
    path.write_text(hostile_stream())
    page.goto(live_app["url"] + "/runs/import/")
    page.set_input_files("[data-import-file]", str(path))
    page.click("[data-import-submit]")
    page.wait_for_url(re.compile(r"/runs/\d+/$"))
    expect(page.locator("[data-status]")).to_have_text("failed")
    expect(page.locator(".item-message [data-text-part=output_text]")).to_have_text(
        f"Hello {SCRIPT} and {IMG} and {MD_LINK} end.")
    # Everything hostile is on the page, as text.
    expect(page.locator(".item-function_call .item-name")).to_have_text("<svg onload=alert(9)>")
    expect(page.locator(".item-mcp_call .item-error")).to_contain_text(IMG)
    expect(page.locator(".item-malformed")).to_contain_text("<script>alert(17)</script>")
    expect(page.locator("[data-error]")).to_contain_text("<img src=x onerror=alert(16)>")
    expect(page.locator(".citations")).to_contain_text("<script>alert(7)</script>")
    expect(page.locator(".unknown-types")).to_contain_text("response.<script>alert(15)</script>")
    page.locator(".item-message .token-toggle").count()  # rendering settled
    page.wait_for_timeout(300)

    hrefs = page.evaluate("() => [...document.querySelectorAll('[href], [src], [action], [formaction]')].map(n => "
                          "n.getAttribute('href') || n.getAttribute('src') || n.getAttribute('action') || "
                          "n.getAttribute('formaction'))")
    assert not [h for h in hrefs if h.strip().lower().startswith(("javascript:", "vbscript:"))]
    handlers = page.evaluate("() => [...document.querySelectorAll('*')]"
                             ".flatMap(n => [...n.attributes].map(a => a.name))"
                             ".filter(name => name.startsWith('on'))")
    assert handlers == []
    scripts = page.evaluate("() => [...document.scripts].map(s => [s.type, s.getAttribute('src')])")
    assert all(src and src.startswith("/static/") or kind == "application/json" for kind, src in scripts), scripts
    images = page.evaluate("() => [...document.querySelectorAll('[data-output] img')].map(i => i.getAttribute('src'))")
    assert [src for src in images if src] == [], images  # the 'partial image' was not base64: nothing is shown
    for injected in ("[data-output] svg", "[data-output] b", "[data-output] script", "[data-output] iframe"):
        assert page.locator(injected).count() == 0, injected
    # Only http(s) sources became links, and they open safely.
    links = page.locator(".citations a[target=_blank]")
    expect(links).to_have_count(1)
    expect(links).to_have_attribute("href", "https://example.com/ok")
    expect(links).to_have_attribute("rel", "noopener noreferrer nofollow")
    screenshot(page, "xss-hostile-stream")
    assert dialogs == []
    assert page_factory.console_errors == []
