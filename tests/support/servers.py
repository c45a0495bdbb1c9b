"""Real processes for tests: a free port, Daphne serving the app, the simulator alone, ``manage.py``
commands, clean stops.

Tests that use these start subprocesses, so they carry the ``server`` marker (tests/conftest.py
adds it for the fixtures built on them; modules that call them directly set ``pytestmark``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]  # tests/support/servers.py -> the repository
RECORDINGS = ROOT / "tests" / "recordings"  # real streams, kept with the tests that replay them
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
    """Start Daphne serving ``dashboard.asgi:application`` in a subprocess; returns (process, base_url).
    Through ``python -m dashboard.serve``: the event loop is ``STREAMSCOPE_EVENT_LOOP``'s (in ``extra_env``
    or the environment; asyncio's by default, as ``daphne ...`` in ``make run`` and the Procfile)."""
    port = port or free_port()
    command = ["-m", "dashboard.serve", "-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS,
               "dashboard.asgi:application"]
    return _start(command, var_dir, f"daphne-{port}.log", port, {"PORT": str(port), **(extra_env or {})})


def start_simulator(var_dir: Path, extra_env: dict[str, str] | None = None, port: int | None = None,
                    args: tuple[str, ...] = ()):
    """Start the simulator alone (``python -m simulator.serve``, uvicorn, gate open) in a subprocess;
    returns (process, base_url) where ``base_url + "/sim/v1"`` is its API."""
    port = port or free_port()
    command = ["-m", "simulator.serve", "--port", str(port), *args]
    return _start(command, var_dir, f"simulator-{port}.log", port, extra_env or {})


def _start(command: list[str], var_dir: Path, log_name: str, port: int, extra_env: dict[str, str]):
    """``python <command>`` with the app's settings and ``var_dir``, its output in ``var_dir/log_name``;
    returns (process, base_url) once its simulator answers."""
    env = {**os.environ, "STREAMSCOPE_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "dashboard.settings",
           **extra_env}
    log = open(var_dir / log_name, "wb")
    process = subprocess.Popen([sys.executable, *command], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
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


def manage(var_dir: Path, *args: str, env: dict | None = None) -> str:
    """Run ``manage.py <args>`` against the app whose state lives in ``var_dir``; returns its stdout."""
    full_env = {**os.environ, "STREAMSCOPE_VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "dashboard.settings",
                **(env or {})}
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=full_env, capture_output=True,
                            text=True, check=True)
    return result.stdout


def chunked(body: bytes) -> list[bytes]:
    """The data of each chunk of an HTTP/1.1 chunked body, the last (empty) one included."""
    chunks = []
    while True:
        size_line, body = body.split(b"\r\n", 1)
        size = int(size_line, 16)
        chunks.append(body[:size])
        assert body[size:size + 2] == b"\r\n"
        body = body[size + 2:]
        if size == 0:
            assert body == b""
            return chunks


def app_with_alice(var_dir: Path, token_name: str) -> str:
    """A migrated app in ``var_dir`` with the user alice (password alice-pass-123); her new API token."""
    manage(var_dir, "migrate", "--noinput")
    manage(var_dir, "shell", "-c",
           "from django.contrib.auth.models import User; User.objects.create_user('alice', password='alice-pass-123')")
    return manage(var_dir, "create_token", "alice", "--name", token_name).strip().splitlines()[-1]
