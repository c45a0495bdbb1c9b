"""Run the simulator alone on uvicorn: a load generator, or the benchmarks' upstream.

    .venv/bin/python -m simulator.serve [--host 127.0.0.1] [--port 9000] [--write-interval-ms 100]

A simulator-only process: the gate open (no login, no token, no metering: bind it to 127.0.0.1 or
a private network), no recovery sweep (it runs no runs and needs no database). It serves the
project's ASGI application (``settings.ASGI_APPLICATION``), so ``/sim/v1/`` takes the direct ASGI
path of an open simulator (:mod:`simulator.asgi`) with the same bytes, statuses and headers as
under Daphne; uvicorn with httptools only writes them for less CPU (docs/simulator.md, "Load
generator"). The dashboard itself stays on Daphne.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping

# Idle keep-alive connections are closed after this; longer than clients' pools keep them (httpx:
# 5 s), so a client never reuses a connection the server is closing at that moment.
KEEP_ALIVE_S = 75
# On a stop (SIGTERM, Ctrl+C) streams still open are cut after this, as Daphne cuts them at once.
STOP_GRACE_S = 2
# The same switch as the other processes' (streams/event_loop.py, which the simulator may not import).
EVENT_LOOP_ENV = "STREAMSCOPE_EVENT_LOOP"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulator.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=9000, help="port to listen on (default 9000)")
    parser.add_argument("--write-interval-ms", type=float, default=None,
                        help="the process default of sim_write_interval_ms: a stream writes at most once per "
                             "interval (100 for a load generator; default 0, every event at its own time)")
    parser.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    return parser.parse_args(argv)


def simulator_only_environment(args: argparse.Namespace) -> dict[str, str]:
    """The settings of a simulator-only process, as environment variables read by the settings."""
    env = {"STREAMSCOPE_SIMULATOR": "1", "STREAMSCOPE_SIMULATOR_OPEN": "1", "STREAMSCOPE_RECOVERY_INTERVAL_S": "0",
           "STREAMSCOPE_LOG_LEVEL": args.log_level.upper()}
    if args.write_interval_ms is not None:
        env["STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS"] = str(args.write_interval_ms)
    return env


def uvicorn_loop(environ: Mapping[str, str] = os.environ) -> str:
    """uvicorn's ``loop`` setting: asyncio's loop unless ``STREAMSCOPE_EVENT_LOOP`` says ``uvloop`` (an error
    where it is not installed) or ``auto`` (uvloop when it can be imported). uvloop measured no cheaper per
    event here at one write per event (docs/decisions.md), so it is not a dependency."""
    wanted = environ.get(EVENT_LOOP_ENV, "").strip().lower() or "asyncio"
    if wanted not in ("auto", "uvloop", "asyncio"):
        raise SystemExit(f"{EVENT_LOOP_ENV}={wanted!r}: use one of auto, uvloop, asyncio")
    return wanted


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.update(simulator_only_environment(args))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")  # as manage.py does

    import uvicorn
    from django.conf import settings

    module, _, attribute = settings.ASGI_APPLICATION.rpartition(".")
    uvicorn.run(f"{module}:{attribute}", host=args.host, port=args.port, http="httptools", loop=uvicorn_loop(),
                lifespan="off", access_log=False, log_level=args.log_level, timeout_keep_alive=KEEP_ALIVE_S,
                timeout_graceful_shutdown=STOP_GRACE_S)


if __name__ == "__main__":
    main()
