"""manage.py prune_events --older-than 30d [--dry-run]: delete the events of old runs, keep the runs."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from streams.history.retention import BATCH_EVENTS, BadSpan, parse_span, prune_events
from streams.protocol.values import BadValue, parse_int


class Command(BaseCommand):
    help = ("Delete the events of runs older than --older-than (30d, 12h or a number of days), in batches; "
            "summaries, outputs, metrics, flags and verdicts stay, pinned runs keep their events.")

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="an age: 30d, 12h, or a number of days")
        parser.add_argument("--dry-run", action="store_true", help="count what would go, delete nothing")
        parser.add_argument("--batch-size", default=str(BATCH_EVENTS), help="event ids per DELETE statement")

    def handle(self, *args, **options):
        try:
            older_than = parse_span(options["older_than"])
            batch = parse_int(options["batch_size"], "--batch-size", minimum=1, maximum=100_000)
        except (BadSpan, BadValue) as exc:
            raise CommandError(str(exc)) from None
        result = prune_events(older_than, dry_run=options["dry_run"], batch_events=batch)
        verb = "would delete" if result.dry_run else "deleted"
        self.stdout.write(f"{verb} {result.events} events of {result.runs} runs older than {options['older_than']}")
