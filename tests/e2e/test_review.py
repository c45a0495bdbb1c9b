"""In the browser: a reviewer clears a queue of 50 runs from the keyboard alone; a stop rule cuts
a live stream, flagged live on every open page of the run; the admin's run view and rule test box."""

import json
import re

import httpx
import pytest
from playwright.sync_api import expect

from tests.support.browser import screenshot
from tests.support.servers import manage

pytestmark = pytest.mark.e2e

QUEUE_MODEL = "review-e2e"  # the runs made here, kept apart from other tests' runs by the model filter


def shell(live_app, code):
    return manage(live_app["var_dir"], "shell", "-c", code)


def make_queue(live_app, count):
    events = [
        {"type": "response.created", "sequence_number": 0,
         "response": {"id": "r", "status": "in_progress", "output": []}},
        {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "m", "output_index": 0,
         "content_index": 0, "delta": "Output number {n}: all fine here."},
    ]
    code = f"""
import json
from django.contrib.auth.models import User
from streams.models import Event, Run
alice = User.objects.get(username='alice')
events = json.loads({json.dumps(json.dumps(events))})
ids = []
for n in range({count}):
    run = Run.objects.create(owner=alice, provider='simulator', model='{QUEUE_MODEL}', status='completed',
                             request={{'model': '{QUEUE_MODEL}', 'input': f'Question {{n}}?', 'stream': True}},
                             output_text=f'Output number {{n}}: all fine here.', event_count=2)
    for seq, e in enumerate(events):
        e = dict(e, delta=e['delta'].format(n=n)) if 'delta' in e else e
        Event.objects.create(run=run, seq=seq, t=float(seq * 10), type=e['type'], data=json.dumps(e))
    ids.append(run.pk)
print(json.dumps(ids))
"""
    return json.loads(shell(live_app, code).strip().splitlines()[-1])


def current_run_id(page):
    expect(page.locator("body[data-review-ready]")).to_have_count(1)
    return int(page.locator("[data-review-run]").get_attribute("data-run-id"))


def test_a_reviewer_clears_a_queue_of_50_runs_from_the_keyboard(page_factory, live_app):
    ids = make_queue(live_app, 50)
    page = page_factory("root", "root-pass-123")
    page.goto(f"{live_app['url']}/review/?model={QUEUE_MODEL}")
    expect(page.locator("[data-review-waiting]")).to_contain_text("50 waiting")
    expect(page.locator("[data-key-hint]")).to_be_visible()
    expect(page.locator(".item-message .text")).to_contain_text("Output number 0")
    screenshot(page, "review-queue")

    seen, decided, skipped_first = [], {}, None
    keys = "arf"
    for step in range(51):  # 50 verdicts + one skip
        run_id = current_run_id(page)
        seen.append(run_id)
        if step == 0:
            key, skipped_first = "n", run_id  # skip: the run goes to the back of the queue
        elif step == 1:
            # A note from the keyboard: "/" focuses it, Esc leaves it, then the verdict key.
            page.keyboard.press("/")
            page.keyboard.type("reads fine; a quick note")
            page.keyboard.press("Escape")
            key = "a"
        else:
            key = keys[step % 3]
        with page.expect_navigation():
            page.keyboard.press(key)
        if key != "n":
            decided[run_id] = {"a": "approved", "r": "rejected", "f": "flagged"}[key]
    expect(page.locator("[data-review-empty]")).to_be_visible()
    assert seen[-1] == skipped_first  # the skipped run came back last
    assert sorted(decided) == sorted(ids)
    screenshot(page, "review-queue-empty")

    stored = json.loads(shell(live_app, f"""
import json
from streams.models import Run, Verdict
ids = {ids}
print(json.dumps({{'states': dict(Run.objects.filter(pk__in=ids).values_list('id', 'review_state')),
                  'verdicts': Verdict.objects.filter(run_id__in=ids).count(),
                  'notes': list(Verdict.objects.filter(run_id__in=ids).exclude(note='')
                                .values_list('note', flat=True))}}))
""").strip().splitlines()[-1])
    assert {int(k): v for k, v in stored["states"].items()} == decided
    assert stored["verdicts"] == 50 and stored["notes"] == ["reads fine; a quick note"]
    assert page_factory.console_errors == []


def test_the_queue_page_narrow_and_dark(browser, live_app):
    make_queue(live_app, 1)
    context = browser.new_context(viewport={"width": 420, "height": 860}, color_scheme="dark")
    try:
        page = context.new_page()
        errors = []
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(live_app["url"] + "/accounts/login/")
        page.fill("input[name=username]", "root")
        page.fill("input[name=password]", "root-pass-123")
        page.click("button[type=submit]")
        page.wait_for_url(live_app["url"] + "/")
        page.goto(f"{live_app['url']}/review/?model={QUEUE_MODEL}")
        expect(page.locator(".verdict-approve")).to_be_visible()
        # Nothing wider than the screen.
        assert page.evaluate("document.documentElement.scrollWidth") <= 420
        screenshot(page, "review-queue-narrow-dark")
        assert errors == []
    finally:
        context.close()


def test_a_stop_rule_cuts_a_live_stream_and_every_open_page_sees_the_flags(page_factory, live_app):
    shell(live_app, """
from streams.models import ModerationRule
ModerationRule.objects.create(name='unicorn watch', kind='keywords', patterns='unicorn', scope='output_text',
                              action='flag')
ModerationRule.objects.create(name='no zebracorns', kind='keywords', patterns='zebracorn', scope='output_text',
                              action='stop')
""")
    try:
        page = page_factory()
        page.select_option("[data-provider]", "simulator")
        page.select_option("[data-model]", "sim-text")
        page.click(".instructions summary")
        page.fill("input[name=sim_tokens_per_s]", "2")
        # sim-text quotes the prompt first: "unicorn" arrives around token 8, "zebracorn" around 11.
        page.fill("[data-input]", "Tell me about the unicorn and the zebracorn, in a long essay please.")
        page.press("[data-input]", "Control+Enter")
        expect(page.locator("[data-run-link]")).to_be_visible()
        run_id = int(re.search(r"/runs/(\d+)/", page.locator("[data-run-link]").get_attribute("href")).group(1))
        second = page_factory(context=page.context, username=None)
        second.goto(f"{live_app['url']}/runs/{run_id}/")
        expect(second.locator("[data-status]")).to_have_text("streaming", timeout=10_000)

        for tab in (page, second):
            expect(tab.locator("[data-status]")).to_have_text("cancelled", timeout=30_000)
            flags = tab.locator("[data-flags] .flag")
            expect(flags).to_have_count(2)
            expect(flags.nth(0)).to_contain_text("Flagged by rule “unicorn watch”")
            expect(flags.nth(1)).to_contain_text("Stopped by rule “no zebracorns”")
            expect(flags.nth(1).locator("mark")).to_have_text("zebracorn")
            expect(tab.locator("[data-error]")).to_contain_text("stopped by moderation rule “no zebracorns”")
            # The spans are highlighted in the output itself (CSS Custom Highlight over the text).
            expect(tab.locator("[data-output]")).to_contain_text("zebracorn")
            tab.wait_for_function(
                "() => CSS.highlights.has('streamscope-flag') && CSS.highlights.get('streamscope-flag').size === 2")
            marked = tab.evaluate("[...CSS.highlights.get('streamscope-flag')].map(r => r.toString()).sort()")
            assert marked == ["unicorn", "zebracorn"]
        # "first matched at event #N" selects that event in the event list.
        seq_button = second.locator("[data-flags] .flag").nth(1).locator("[data-flag-seq]")
        seq = int(seq_button.get_attribute("data-flag-seq"))
        seq_button.click()
        expect(second.locator("[data-raw-title]")).to_contain_text(f"#{seq} ")
        expect(second.locator("[data-raw]")).to_contain_text("zebra")
        screenshot(page, "live-flagged-run-playground")
        screenshot(second, "live-flagged-run-page")

        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        detail = httpx.get(f"{live_app['url']}/api/runs/{run_id}/", cookies=cookies).json()
        assert detail["status"] == "cancelled" and detail["error"]["code"] == "moderation_stopped"
        # Cut right there: the events end at (or one event after) the one that completed the match.
        assert detail["event_count"] <= seq + 3
        assert "zebracorn" in detail["output_text"] and "essay" not in detail["output_text"].split("zebracorn", 1)[1]
        assert page_factory.console_errors == []

        # The admin's view of the same run: request, flags with the span, output, events page.
        admin_page = page_factory("root", "root-pass-123")
        admin_page.goto(f"{live_app['url']}/admin/streams/run/{run_id}/change/")
        expect(admin_page.locator(".flag-context mark").first).to_have_text("unicorn")
        expect(admin_page.locator("#events")).to_contain_text("response.output_text.delta")
        screenshot(admin_page, "admin-run-view")

        # The same run in the review queue: flags in the header, spans highlighted in the output.
        admin_page.goto(f"{live_app['url']}/review/?run={run_id}")
        expect(admin_page.locator(".review-flags .flag")).to_have_count(2)
        admin_page.wait_for_function(
            "() => CSS.highlights.has('streamscope-flag') && CSS.highlights.get('streamscope-flag').size === 2")
        screenshot(admin_page, "review-flagged-run")
    finally:
        shell(live_app, "from streams.models import ModerationRule; ModerationRule.objects.all().delete()")


def test_the_rule_test_box_marks_matches_and_bad_regexes_are_refused(page_factory, live_app):
    page = page_factory("root", "root-pass-123")
    page.goto(f"{live_app['url']}/admin/streams/moderationrule/add/")
    page.fill("#id_name", "api keys")
    page.select_option("#id_kind", "regex")
    page.fill("#id_patterns", r"sk-[A-Za-z0-9]{8,}")
    page.fill("[data-rule-test-sample]", "my key is sk-abcdef123456 and sk-short")
    page.click("[data-rule-test-button]")
    expect(page.locator("[data-rule-test-result] mark")).to_have_text(["sk-abcdef123456"])
    expect(page.locator("[data-rule-test-summary]")).to_have_text("1 match")
    screenshot(page, "admin-rule-test-box")
    page.fill("#id_patterns", "(a+)+b")
    page.click("[data-rule-test-button]")
    expect(page.locator("[data-rule-test-error]")).to_contain_text("exponential time")
    page.click("input[name=_save]")
    expect(page.locator(".errorlist")).to_contain_text("exponential time")
    screenshot(page, "admin-rule-bad-regex")
