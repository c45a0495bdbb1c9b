"""Fixtures every test folder may need (users, a scripted upstream, a real Daphne serving the
simulator, a crash-test app) and the markers derived from them.

Helpers that are not fixtures live in tests/support/; no test module imports another test module
or a conftest.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.live.launcher import use_launcher
from tests.support.servers import RECORDINGS, manage, start_daphne, stop_process
from tests.support.upstreams import ScriptedUpstream

# Tests using any of these fixtures start real processes: they get the ``server`` marker, so
# ``make test-fast`` (-m "not e2e and not server and not services and not slow") leaves them out.
SERVER_FIXTURES = {"sim_server", "live_app", "crash_setup"}


@pytest.fixture(scope="session", autouse=True)
def fast_password_hashing():
    """Hash test passwords with MD5: the default PBKDF2 costs about half a second of CPU per user
    created or login checked, which made account set-up most of the in-process suite's time. The
    servers the tests start run with the real settings (and real hashing)."""
    from django.test.utils import override_settings

    with override_settings(PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"]):
        yield


@pytest.fixture(scope="session")
def sim_server(tmp_path_factory) -> Iterator[str]:
    """A real Daphne process serving the app; yields its simulator base URL (…/sim/v1)."""
    var_dir = tmp_path_factory.mktemp("sim-server")
    process, base_url = start_daphne(var_dir, extra_env={"STREAMSCOPE_SIMULATOR_OPEN": "1"})  # a simulator-only process
    try:
        yield base_url + "/sim/v1"
    finally:
        stop_process(process)


@pytest.fixture
def crash_setup(tmp_path):
    """A simulator in its own process, and an app database with one user (alice): for tests that
    start, kill and restart the app's own process (tests/live/test_recovery.py and the browser's
    reconnect test). Yields (app var dir, env for the app, list of processes to stop at the end)."""
    sim_dir, app_dir = tmp_path / "sim", tmp_path / "app"
    sim_dir.mkdir()
    app_dir.mkdir()
    sim_process, sim_url = start_daphne(sim_dir, extra_env={"STREAMSCOPE_SIMULATOR_OPEN": "1"})
    manage(app_dir, "migrate", "--noinput")
    manage(app_dir, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('alice', password='alice-pass-123')")
    env = {"STREAMSCOPE_SIMULATOR_URL": sim_url + "/sim/v1", "STREAMSCOPE_RECOVERY_INTERVAL_S": "0.5"}
    processes = [sim_process]
    yield app_dir, env, processes
    for process in processes:
        if process.poll() is None:
            stop_process(process)


@pytest.fixture
def upstream_settings() -> dict:
    """Django settings the ``upstream`` fixture applies beside its providers. Empty: the defaults.
    A module overrides this fixture when its faults need other limits (say, a short stall timeout)."""
    return {}


@pytest.fixture
async def upstream(settings, upstream_settings):
    """A scripted upstream (tests/support/upstreams.py) registered as three providers: ``scripted``
    (Responses), ``scripted-bg`` (Responses, background mode) and ``scripted-chat`` (Chat
    Completions). Tests push :class:`Script` objects onto ``upstream.scripts``."""
    server = await ScriptedUpstream().start()
    settings.STREAMSCOPE_EXTRA_PROVIDERS = json.dumps([
        {"name": "scripted", "base_url": server.base_url},
        {"name": "scripted-bg", "base_url": server.base_url, "background": True},
        {"name": "scripted-chat", "base_url": server.base_url, "protocol": "chat"},
    ])
    for name, value in upstream_settings.items():
        setattr(settings, name, value)
    yield server
    await server.stop()


@pytest.fixture
def recordings() -> Path:
    return RECORDINGS


@pytest.fixture
def user(django_user_model):
    return django_user_model.objects.create_user("alice", password="alice-pass-123")


@pytest.fixture
def other_user(django_user_model):
    return django_user_model.objects.create_user("bob", password="bob-pass-123")


@pytest.fixture
def staff_user(django_user_model):
    return django_user_model.objects.create_user("carol", password="carol-pass-123", is_staff=True)


def pytest_collection_modifyitems(config, items):
    """Mark server tests by the fixtures they use (browser tests start Daphne too), then put the
    browser tests last: sync Playwright keeps an event loop running in the main thread for the
    rest of the session, which would break every asyncio test collected after it."""
    for item in items:
        if item.get_closest_marker("e2e") or SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.server)
    items.sort(key=lambda item: "/tests/e2e/" in str(item.fspath))


class NoLauncher:
    """A launcher that executes nothing: runs are created and stay queued, for tests that look only
    at what the edges accept, store and show."""

    async def launch(self, run_id, resume=False):
        return None

    async def cancel(self, run_id):
        return False


@pytest.fixture
def no_execution():
    use_launcher(NoLauncher())
    yield
    use_launcher(None)
