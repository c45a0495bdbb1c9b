"""Import a recorded stream (SSE text, JSONL export, HAR, JSON error body) as a stored run."""

from __future__ import annotations

from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from streams.history.importer import ImportFailed, import_stream, max_import_bytes


class Command(BaseCommand):
    help = (
        "Import PATH (SSE text, a Streamscope JSONL export, a HAR file or a JSON error body) "
        "as a run. Prints the new run's id on the last line."
    )

    def add_arguments(self, parser):
        parser.add_argument("path", help="the file to import")
        parser.add_argument("--user", help="owner's username (default: the first superuser)")
        parser.add_argument(
            "--entry",
            type=int,
            default=None,
            help="HAR only: which event-stream response to import (0-based, default 0)",
        )

    def handle(self, *args, path: str, user: str | None, entry: int | None, **options):
        owner = self._owner(user)
        file = Path(path)
        try:
            size = file.stat().st_size
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if size > max_import_bytes():
            # Refuse before reading it all into memory.
            raise CommandError(
                f"{path} is {size} bytes; the import limit is {max_import_bytes()} "
                "bytes (setting STREAMSCOPE_MAX_IMPORT_BYTES)"
            )
        try:
            content = file.read_bytes()
            run = import_stream(content, owner=owner, filename=file.name, har_entry=entry)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
        except ImportFailed as exc:
            raise CommandError(f"cannot import {path}: {exc}") from exc
        for note in getattr(run, "import_notes", []):
            self.stdout.write(f"  {note}")
        self.stdout.write(
            f"Imported {run.event_count} events from {file.name} as run {run.pk} "
            f"({run.status}, owner {owner.get_username()})"
        )
        self.stdout.write(str(run.pk))

    def _owner(self, username: str | None):
        User = get_user_model()
        if username:
            try:
                return User.objects.get(**{User.USERNAME_FIELD: username})
            except User.DoesNotExist as exc:
                raise CommandError(f"no user named {username!r}") from exc
        owner = User.objects.filter(is_superuser=True).order_by("pk").first()
        if owner is None:
            raise CommandError(
                "no superuser to own the run: pass --user USERNAME, or create one "
                "with `manage.py createsuperuser` (or `manage.py bootstrap`)"
            )
        return owner
