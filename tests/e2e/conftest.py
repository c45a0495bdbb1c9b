"""End-to-end fixtures: a migrated database, a real Daphne, Debian's Chromium via Playwright."""

from __future__ import annotations

import os

import pytest

from tests.support.servers import manage, start_daphne, stop_process

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
               "--disable-component-update", "--disable-sync", "--disable-quic"]


@pytest.fixture(scope="session")
def live_app(tmp_path_factory):
    """A migrated app served by Daphne, with users alice (plain) and root (staff)."""
    var_dir = tmp_path_factory.mktemp("e2e")
    manage(var_dir, "migrate", "--noinput")
    manage(var_dir, "shell", "-c",
           "from django.contrib.auth.models import User;"
           "User.objects.create_user('alice', password='alice-pass-123');"
           "User.objects.create_user('mallory', password='mallory-pass-123');"
           "User.objects.create_superuser('root', '', 'root-pass-123')")
    process, base_url = start_daphne(var_dir)
    try:
        yield {"url": base_url, "var_dir": var_dir}
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} not installed (scripts/ensure-chromium.sh installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page_factory(browser, live_app):
    contexts = []
    console_errors: list[str] = []

    def new_page(username: str = "alice", password: str = "alice-pass-123", context=None):
        if context is None:
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            contexts.append(context)
        page = context.new_page()
        page.on("console",
                lambda msg: console_errors.append(f"{msg.type}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: console_errors.append(f"pageerror: {exc}"))
        if username:
            page.goto(live_app["url"] + "/accounts/login/")
            page.fill("input[name=username]", username)
            page.fill("input[name=password]", password)
            page.click("button[type=submit]")
            page.wait_for_url(live_app["url"] + "/")
        return page

    new_page.console_errors = console_errors
    yield new_page
    for context in contexts:
        context.close()

