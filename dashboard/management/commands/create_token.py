"""manage.py create_token <username> [--name NAME]: a new API token, printed alone on the last line."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from dashboard.tokens import issue_token


class Command(BaseCommand):
    help = "Make a personal API token for a user and print it (only its hash is stored)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="a name to tell the token apart on /settings/tokens/")

    def handle(self, *args, username: str, name: str, **options):
        User = get_user_model()
        try:
            user = User.objects.get(**{User.USERNAME_FIELD: username})
        except User.DoesNotExist:
            raise CommandError(f"no user named {username!r}") from None
        token, secret = issue_token(user, name or "created with manage.py create_token")
        self.stderr.write(f"token {token.prefix}… for {username}; it is shown only now:")
        self.stdout.write(secret)
