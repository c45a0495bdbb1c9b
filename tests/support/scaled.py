"""A scaled-out deployment on this machine, for tests and benchmarks: a fresh PostgreSQL database,
a private Redis key prefix, Daphne web processes and stream-worker processes, all real.

Services are found at ``STREAMSCOPE_TEST_REDIS_URL`` (default redis://127.0.0.1:6379/0) and
``STREAMSCOPE_TEST_PG_URL`` (default postgres://postgres@127.0.0.1:5432/postgres);
:func:`services_missing` says in words which one is not reachable.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse, urlunparse

import pytest

from tests.support.servers import ROOT, free_port, start_daphne, start_simulator, stop_process

REDIS_URL = os.environ.get("STREAMSCOPE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_URL = os.environ.get("STREAMSCOPE_TEST_PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def services_missing() -> str | None:
    """None when Redis and PostgreSQL both answer, else why not (for pytest.skip)."""
    try:
        import psycopg
        import redis
    except ImportError as exc:
        return f"scaled-out extras not installed ({exc.name}); run `make install`"
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # any failure means "not usable here"
        return f"Redis not reachable at {REDIS_URL} ({exc}); .ci/run starts it"
    try:
        psycopg.connect(PG_URL, connect_timeout=3).close()
    except Exception as exc:
        return f"PostgreSQL not reachable at {PG_URL} ({str(exc).strip()}); .ci/run starts it"
    return None


def scaled_out_marks() -> list:
    """``pytestmark`` of a module that needs a real scaled-out deployment: skipped, saying which
    service is missing, where Redis or PostgreSQL cannot be had."""
    missing = services_missing()
    return [
        pytest.mark.server,
        pytest.mark.services,
        pytest.mark.skipif(missing is not None, reason=f"scaled-out mode needs Redis and PostgreSQL: {missing}"),
    ]


def two_web_processes(var_dir: Path, users: tuple[tuple[str, str], ...] | None = None) -> Iterator[Deployment]:
    """A module fixture's body (``yield from``): a deployment with two Daphne web processes, closed after."""
    deployment = Deployment(var_dir)
    try:
        deployment.setup(**({"users": users} if users else {}))
        deployment.start_web()
        deployment.start_web()
        yield deployment
    finally:
        deployment.close()


def script_on_new_deployment(var_dir: Path, source: str) -> dict:
    """A deployment set up for one script (:meth:`Deployment.script_result`), its RESULT returned
    and the deployment closed, whatever the script did."""
    deployment = Deployment(var_dir)
    try:
        deployment.setup()
        return deployment.script_result(source)
    finally:
        deployment.close()


def _with_db(url: str, name: str) -> str:
    return urlunparse(urlparse(url)._replace(path="/" + name))


class Deployment:
    """One scaled-out Streamscope: call :meth:`setup`, start processes, :meth:`close` at the end."""

    def __init__(self, var_dir: Path, extra_env: dict[str, str] | None = None, simulator: str = "uvicorn") -> None:
        """``simulator``: the server of the simulator's own process, "uvicorn" (``python -m
        simulator.serve``, as the embedded benchmarks run it) or "daphne" (how scaled-mode figures
        before 2026-11-30's third session were taken)."""
        if simulator not in ("uvicorn", "daphne"):
            raise ValueError(f"simulator must be uvicorn or daphne, not {simulator!r}")
        self.simulator = simulator
        self.var_dir = var_dir
        self.db_name = f"streamscope_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
        self.database_url = _with_db(PG_URL, self.db_name)
        self.sim_port = free_port()
        self.env = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": REDIS_URL,
            "STREAMSCOPE_REDIS_PREFIX": f"sstest-{uuid.uuid4().hex[:8]}",
            "STREAMSCOPE_LAUNCHER": "worker",
            "STREAMSCOPE_RECOVERY_INTERVAL_S": "0.5",
            "STREAMSCOPE_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        }
        self.processes: list[subprocess.Popen] = []
        self.webs: list[str] = []
        self.sim_url = ""

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(sql)

    def setup(self, users: tuple[tuple[str, str], ...] = (("alice", "alice-pass-123"),)) -> None:
        self._admin(f'CREATE DATABASE "{self.db_name}"')
        # The simulator runs in its own embedded-mode process (own SQLite, no Redis), on uvicorn by
        # default: ~60 us of CPU per event on Daphne against ~40 on uvicorn (docs/simulator.md).
        sim_dir = self.var_dir / "sim"
        sim_dir.mkdir(exist_ok=True)
        start = start_simulator if self.simulator == "uvicorn" else start_daphne
        process, base = start(sim_dir, extra_env={"STREAMSCOPE_SIMULATOR_OPEN": "1",
                                                  "STREAMSCOPE_RECOVERY_INTERVAL_S": "0"})
        self.processes.append(process)
        self.sim_url = base + "/sim/v1"
        self.env["STREAMSCOPE_SIMULATOR_URL"] = self.sim_url
        self.manage("migrate", "--noinput")
        creates = ";".join(f"User.objects.create_user({name!r}, password={password!r})" for name, password in users)
        self.manage("shell", "-c", f"from django.contrib.auth.models import User;{creates}")

    def manage(self, *args: str) -> str:
        env = {**os.environ, "STREAMSCOPE_VAR_DIR": str(self.var_dir), "DJANGO_SETTINGS_MODULE": "dashboard.settings",
               **self.env}
        result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True,
                                text=True, check=False)
        if result.returncode:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def script_result(self, source: str) -> dict:
        """Run ``source`` in ``manage.py shell`` against this deployment's database; it prints one line
        ``RESULT <json>``, returned decoded."""
        script = self.var_dir / f"script-{uuid.uuid4().hex[:8]}.py"
        script.write_text(source)
        output = self.manage("shell", "-c", f"exec(open({str(script)!r}).read())")
        return json.loads(output.split("RESULT ", 1)[1])

    def start_web(self) -> str:
        process, base = start_daphne(self.var_dir, extra_env=self.env)
        self.processes.append(process)
        self.webs.append(base)
        return base

    def start_worker(self, *args: str, timeout: float = 30.0) -> subprocess.Popen:
        """A ``manage.py streamworker`` process, returned once it says it is ready."""
        log_path = self.var_dir / f"worker-{len(self.processes)}.log"
        env = {**os.environ, "STREAMSCOPE_VAR_DIR": str(self.var_dir), "DJANGO_SETTINGS_MODULE": "dashboard.settings",
               **self.env}
        log = open(log_path, "wb")
        process = subprocess.Popen([sys.executable, "manage.py", "streamworker", *args], cwd=ROOT, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        deadline = time.monotonic() + timeout
        while b" ready: queue " not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"stream worker did not start:\n{log_path.read_text()}")
            time.sleep(0.05)
        return process

    def sql(self, query: str, *params) -> list[tuple]:
        import psycopg

        with psycopg.connect(self.database_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                if "streamworker" in " ".join(map(str, process.args)):
                    process.send_signal(signal.SIGKILL)
                    process.wait()
                else:
                    stop_process(process)
        try:
            self._admin(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        except Exception as exc:  # never hide the test's own result behind cleanup
            print(f"could not drop test database {self.db_name}: {exc}", file=sys.stderr)
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            prefix = self.env["STREAMSCOPE_REDIS_PREFIX"]
            keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
            if keys:
                client.delete(*keys)
        except Exception as exc:
            print(f"could not clean Redis keys: {exc}", file=sys.stderr)
