"""manage.py sqlite_pages [--convert] [--file PATH]: an SQLite database's page size, and its conversion
to the size new databases get (dashboard/sqlite_pages.py)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from dashboard.sqlite_pages import (
    PAGE_SIZE,
    ConversionFailed,
    ConversionRefused,
    DatabaseFile,
    convert,
    database_path,
    describe_file,
    mebibytes,
    roll_back_unfinished_write,
)


class Command(BaseCommand):
    help = (f"Show the SQLite database's page size; --convert rewrites it with {PAGE_SIZE:,}-byte pages, as new "
            "databases get (stop the server and stream workers and take a backup first: VACUUM rewrites the file).")

    def add_arguments(self, parser):
        parser.add_argument("--convert", action="store_true",
                            help=f"rewrite the database with {PAGE_SIZE:,}-byte pages (VACUUM), every row kept")
        parser.add_argument("--file", type=Path, default=None,
                            help="an SQLite file to read or convert instead of the default database")

    def handle(self, *args, **options):
        try:
            path = options["file"] or database_path(settings.DATABASES["default"])
            if options["convert"]:
                roll_back_unfinished_write(path)  # a conversion cut off before: its rows as before it
            database = describe_file(path)
            self.stdout.write(f"{database.path}: {describe(database)}, journal mode {database.journal_mode}")
            if database.page_size == PAGE_SIZE:
                self.stdout.write(f"It has the {PAGE_SIZE:,}-byte pages new databases get: nothing to convert.")
            elif options["convert"]:
                self.convert_pages(path)
            else:
                self.stdout.write(
                    f"New databases get {PAGE_SIZE:,}-byte pages; --convert rewrites this one with them "
                    "(stop the server and stream workers and take a backup first).")
        except (ConversionRefused, ConversionFailed) as exc:
            raise CommandError(str(exc)) from None

    def convert_pages(self, path: Path) -> None:
        self.stdout.write(f"converting {path} to {PAGE_SIZE:,}-byte pages (VACUUM rewrites the whole file)...")
        done = convert(path, PAGE_SIZE)
        self.stdout.write(
            f"converted: {describe(done.after)} (was {describe(done.before)}), journal mode {done.after.journal_mode}; "
            f"{done.rows:,} rows in {done.tables} tables, all kept (quick_check ok)")


def describe(database: DatabaseFile) -> str:
    return f"{database.page_size:,}-byte pages, {mebibytes(database.bytes_on_disk)}"
