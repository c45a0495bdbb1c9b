"""Personal API tokens: how scripts, SDKs and the gateway authenticate without a session."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A person's bearer token for the JSON API and the gateway (dashboard/tokens.py).

    Only the SHA-256 of the secret is stored; the secret is shown once, when made. ``prefix`` (the
    first characters of the secret) tells tokens apart on the tokens page without revealing them.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16)
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-created_at", "-id")

    def __str__(self) -> str:
        return f"{self.name or 'token'} ({self.prefix}…) of {self.owner_id}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None
