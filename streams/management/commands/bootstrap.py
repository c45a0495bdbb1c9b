"""First-run setup for the embedded mode: a local admin whose password is printed once."""

import secrets

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create a local admin with a random password (printed once) when no superuser exists."

    def add_arguments(self, parser):
        parser.add_argument("--username", default="admin")
        parser.add_argument("--url", default="http://127.0.0.1:8000/", help="where the dashboard will be")

    def handle(self, *args, username: str, url: str, **options):
        User = get_user_model()
        if User.objects.filter(is_superuser=True).exists():
            self.stdout.write(
                f"Log in at {url}accounts/login/ with your existing account "
                f"(forgot it? .venv/bin/python manage.py changepassword {username})."
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email="", password=password)
        bar = "=" * 64
        self.stdout.write(
            f"\n{bar}\n  Streamscope created a local admin (shown only this once):\n"
            f"    username: {username}\n    password: {password}\n"
            f"  Log in at {url}accounts/login/\n"
            f"  Change it: .venv/bin/python manage.py changepassword {username}\n{bar}\n"
        )
