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
        limit = max_import_bytes()
        try:
            content = _read_at_most(file, limit)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if content is None:
            raise CommandError(
                f"{path} holds more than {limit} bytes; the import limit is {limit} bytes "
                "(setting STREAMSCOPE_MAX_IMPORT_BYTES)"
            )
        try:
            run = import_stream(content, owner=owner, filename=file.name, har_entry=entry)
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


def _read_at_most(file: Path, limit: int) -> bytes | None:
    """The file's bytes, or None when it holds more than ``limit``. Reads at most ``limit + 1``
    bytes whatever the file claims to be: a pipe, a FIFO or a device (``/dev/zero``) reports no
    useful size, and a regular file may grow while it is read."""
    with file.open("rb") as stream:
        content = stream.read(limit + 1)
    return None if len(content) > limit else content
