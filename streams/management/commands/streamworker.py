"""Run a stream worker: execute the runs web processes hand over (``STREAMSCOPE_LAUNCHER=worker``)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

from channels.layers import InMemoryChannelLayer, get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from streams.event_loop import EventLoopChoiceError, chosen_loop, loop_factory, running_loop_name
from streams.live.executor import WORKER_NAME
from streams.live.launcher import use_launcher
from streams.live.recovery import start_housekeeping
from streams.live.worker import RUNS_CHANNEL, StreamWorker, workers_layer

log = logging.getLogger("streams.live.worker")


class Command(BaseCommand):
    help = (
        "Execute streaming runs handed over by web processes through the Redis channel layer. "
        "Start as many as you need; SIGTERM stops taking runs and waits for running ones."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-runs", type=int, default=None,
                            help="runs executed at once (default STREAMSCOPE_WORKER_MAX_RUNS)")
        parser.add_argument("--drain-seconds", type=float, default=20.0,
                            help="on SIGTERM/SIGINT, wait this long for running runs to end; runs still "
                                 "going are then left to the recovery sweep of other processes")

    def handle(self, *args, max_runs=None, drain_seconds=20.0, **options):
        layer = workers_layer()
        if (layer is None or isinstance(layer, InMemoryChannelLayer)
                or isinstance(get_channel_layer(), InMemoryChannelLayer)):
            raise CommandError(
                "a stream worker needs a channel layer shared between processes: set REDIS_URL "
                "(the in-memory layer only reaches its own process)"
            )
        try:  # asyncio's loop unless STREAMSCOPE_EVENT_LOOP asks for uvloop (streams/event_loop.py)
            factory = loop_factory(chosen_loop())
        except EventLoopChoiceError as exc:
            raise CommandError(str(exc)) from exc
        with asyncio.Runner(loop_factory=factory) as runner:
            remaining = runner.run(self.serve(max_runs, drain_seconds))
        if remaining:
            log.warning("stopping with %d runs still streaming; other processes will take them over", remaining)
            logging.shutdown()
            # Leaving now (not cancelling) keeps those runs resumable instead of ending them as cancelled.
            os._exit(0)

    async def serve(self, max_runs: int | None, drain_seconds: float) -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        worker = StreamWorker(max_runs=max_runs)
        use_launcher(worker)
        start_housekeeping()
        await worker.start()
        self.stdout.write(f"stream worker {WORKER_NAME} ready: queue {RUNS_CHANNEL},"
                          f" up to {worker.max_runs} runs at once, on {running_loop_name()}'s event loop")
        self.stdout.flush()
        await stop.wait()
        log.info("stream worker stopping: no new runs; waiting up to %gs for %d running", drain_seconds,
                 len(worker.tasks))
        await worker.stop_taking()
        return await worker.drain(drain_seconds)
