"""manage.py fold_insights [--rebuild]: bring the insights roll-up up to date (docs/metrics.md, "The roll-up")."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from streams.history.rollup import fold, mark_everything


class Command(BaseCommand):
    help = ("Recompute the insights roll-up where runs ended, changed, were flagged or deleted since the last fold "
            "(the housekeeping loop does this every minute); --rebuild recomputes every hour that holds runs.")

    def add_arguments(self, parser):
        parser.add_argument("--rebuild", action="store_true", help="drop the roll-up and fold every run again")

    def handle(self, *args, **options):
        if options["rebuild"]:
            self.stdout.write(f"marked {mark_everything()} hours x models to recompute")
        cells = fold()
        self.stdout.write(f"{cells} hour x model cells recomputed")
