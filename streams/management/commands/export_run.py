"""Write a stored run to stdout as SSE text or as Streamscope JSONL."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from streams.history.export import export_jsonl, export_sse
from streams.models import Run

EXPORTERS = {"sse": export_sse, "jsonl": export_jsonl}


class Command(BaseCommand):
    help = "Export run ID to stdout: --format sse (the data: payloads as received) or jsonl."

    def add_arguments(self, parser):
        parser.add_argument("run_id", type=int, metavar="ID")
        parser.add_argument("--format", choices=sorted(EXPORTERS), default="sse")

    def handle(self, *args, run_id: int, format: str, **options):
        try:
            run = Run.objects.get(pk=run_id)
        except Run.DoesNotExist as exc:
            raise CommandError(f"no run with id {run_id}") from exc
        for piece in EXPORTERS[format](run):
            self.stdout.write(piece, ending="")
        self.stdout.flush()
