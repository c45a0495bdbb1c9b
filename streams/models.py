"""Runs and their events: the stored record of what an upstream streamed, and when."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    STREAMING = "streaming"
    COMPLETED = "completed"
    INCOMPLETE = "incomplete"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


TERMINAL_STATUSES = frozenset(
    {
        RunStatus.COMPLETED,
        RunStatus.INCOMPLETE,
        RunStatus.FAILED,
        RunStatus.CANCELLED,
        RunStatus.INTERRUPTED,
    }
)
ACTIVE_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.STREAMING})


class Run(models.Model):
    """One streamed request: what was asked, how it went, and a summary of what came back."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="runs")
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200)
    # The JSON body sent upstream (never headers, so never a key).
    request = models.JSONField(default=dict)
    status = models.CharField(max_length=16, choices=RunStatus.choices, default=RunStatus.QUEUED)
    output_text = models.TextField(blank=True, default="")
    usage = models.JSONField(null=True, blank=True)
    metrics = models.JSONField(default=dict, blank=True)
    # {"message", "code", "http_status"?, "body"?}; null while all is well.
    error = models.JSONField(null=True, blank=True)
    response_id = models.CharField(max_length=200, blank=True, default="")
    # Background mode makes resume (GET ...?starting_after=N) and upstream cancel possible.
    background = models.BooleanField(default=False)
    # The upstream's own sequence_number of the last stored event, the resume cursor.
    last_upstream_seq = models.IntegerField(null=True, blank=True)
    # Which process executes the run and when it last showed signs of life.
    worker = models.CharField(max_length=200, blank=True, default="")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    event_count = models.PositiveIntegerField(default=0)
    imported = models.BooleanField(default=False)
    source_name = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["owner", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.provider}/{self.model}, {self.status})"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def input_text(self) -> str:
        value = self.request.get("input", "") if isinstance(self.request, dict) else ""
        return value if isinstance(value, str) else json.dumps(value)

    def visible_to(self, user: Any) -> bool:
        return bool(user and user.is_authenticated and (user.is_staff or user.pk == self.owner_id))


class Event(models.Model):
    """One server-sent event as received.

    ``data`` holds the event's JSON text exactly as the upstream sent it (key order, unknown
    fields and ``obfuscation`` included), so exports reproduce the wire byte for byte.
    """

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events")
    seq = models.PositiveIntegerField()
    t = models.FloatField(help_text="milliseconds since the request was sent")
    type = models.CharField(max_length=200)
    data = models.TextField()

    class Meta:
        ordering = ["run", "seq"]
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="event_run_seq_unique")]

    def __str__(self) -> str:
        return f"{self.run_id}#{self.seq} {self.type}"

    @property
    def payload(self) -> Any:
        return json.loads(self.data)
