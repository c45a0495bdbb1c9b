"""Fixtures every test module may need: users, a real Daphne serving the simulator."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
RECORDINGS = ROOT.parent / "shared" / "recordings"
# As the Makefile and Procfile run it: Daphne's 1 MiB default websocket message limit applies to
# what it sends too, and one event (a partial image) can be larger (see docs/operations.md).
DAPHNE_OPTIONS = ["--websocket-max-message-size", str(16 * 1024 * 1024)]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"server did not answer at {url} within {timeout}s")


def start_daphne(var_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None):
    """Start ``daphne dashboard.asgi:application`` in a subprocess; returns (process, base_url)."""
    port = port or free_port()
    env = {**os.environ, "STREAMSCOPE_VAR_DIR": str(var_dir), "PORT": str(port)}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    env.update(extra_env or {})
    log = open(var_dir / f"daphne-{port}.log", "wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS, "dashboard.asgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(base_url + "/sim/v1/models", process)
    except Exception:
        process.kill()
        raise
    return process, base_url


def stop_process(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="session")
def sim_server(tmp_path_factory) -> Iterator[str]:
    """A real Daphne process serving the app; yields its simulator base URL (…/sim/v1)."""
    var_dir = tmp_path_factory.mktemp("sim-server")
    process, base_url = start_daphne(var_dir)
    try:
        yield base_url + "/sim/v1"
    finally:
        stop_process(process)


@pytest.fixture
def recordings() -> Path:
    if not RECORDINGS.is_dir():
        pytest.skip(f"shared recordings not found at {RECORDINGS} (they sit beside the checkout in CI)")
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
    """Browser tests last: sync Playwright keeps an event loop running in the main thread for the
    rest of the session, which would break every asyncio test collected after it."""
    items.sort(key=lambda item: "/tests/e2e/" in str(item.fspath))
