"""Run a prompt from the terminal and print its events as they arrive."""

from __future__ import annotations

import asyncio
import json

from channels.layers import get_channel_layer
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from streams.live.control import TooManyActiveRuns, create_run
from streams.live.executor import RunExecutor
from streams.models import TERMINAL_STATUSES
from streams.pipeline.broadcast import group_name


def _preview(data: object) -> str:
    if isinstance(data, dict):
        for key in ("delta", "text", "arguments", "message"):
            if isinstance(data.get(key), str):
                return repr(data[key])[:60]
        if isinstance(data.get("error"), dict):
            return repr(data["error"].get("message"))[:80]
    return ""


class Command(BaseCommand):
    help = "Stream a prompt through a provider, store it as a run, and print every event live."

    def add_arguments(self, parser):
        parser.add_argument("input", help="the prompt")
        parser.add_argument("--provider", default="simulator")
        parser.add_argument("--model", default="sim-text")
        parser.add_argument("--instructions", default="")
        parser.add_argument("--user", help="owner of the run (default: the first superuser)")
        parser.add_argument("--param", action="append", default=[], metavar="KEY=JSON",
                            help="extra request parameter, e.g. --param temperature=0.2 (repeatable)")
        parser.add_argument("--quiet", action="store_true", help="print only the summary")

    def handle(self, *args, **options):
        owner = self._owner(options["user"])
        params = {}
        for item in options["param"]:
            key, sep, raw = item.partition("=")
            if not sep:
                raise CommandError(f"--param expects KEY=JSON, got {item!r}")
            try:
                params[key] = json.loads(raw)
            except ValueError:
                params[key] = raw
        try:
            run = create_run(owner, options["provider"], options["model"], options["input"],
                             options["instructions"], params)
        except (TooManyActiveRuns, LookupError) as exc:
            raise CommandError(str(exc)) from exc
        status = asyncio.run(self._watch(run.pk, options["quiet"]))
        run.refresh_from_db()
        self.stdout.write(f"status {run.status} · {run.event_count} events · metrics {json.dumps(run.metrics)}")
        if run.error:
            self.stderr.write(f"error: {run.error.get('message')}")
            if run.error.get("code") == "connect_error" and run.provider == "simulator":
                self.stderr.write("hint: the simulator is served by the dashboard; start it (make run) "
                                  "or set STREAMSCOPE_SIMULATOR_URL")
        self.stdout.write(str(run.pk))
        if status not in ("completed", "incomplete"):
            raise SystemExit(1)

    def _owner(self, username: str | None):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(username=username)
            except User.DoesNotExist:
                raise CommandError(f"no user named {username!r}") from None
        owner = User.objects.filter(is_superuser=True).order_by("pk").first()
        if owner is None:
            raise CommandError("no superuser exists: pass --user or run `manage.py bootstrap`")
        return owner

    async def _watch(self, run_id: int, quiet: bool) -> str:
        layer = get_channel_layer()
        channel = await layer.new_channel()
        await layer.group_add(group_name(run_id), channel)
        task = asyncio.create_task(RunExecutor(run_id).execute())
        try:
            while True:
                message = await layer.receive(channel)
                if message["type"] == "run.events" and not quiet:
                    for encoded in message["events"]:
                        record = json.loads(encoded)
                        self.stdout.write(f"{record['seq']:>6} {record['t']:>10.1f} ms  {record['type']:<45} "
                                          f"{_preview(record['data'])}")
                elif message["type"] == "run.status" and message["status"] in TERMINAL_STATUSES:
                    break
            return await task
        finally:
            await layer.group_discard(group_name(run_id), channel)
            if not task.done():
                # Interrupted (Ctrl+C): the runner records the run as cancelled before it ends.
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
