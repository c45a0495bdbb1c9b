"""Runs and their events: the stored record of what an upstream streamed, and when."""

from __future__ import annotations

import json
from typing import Any

from django.conf import settings
from django.db import models

from streams.protocol.values import BadValue, clean_json, clean_text


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


class RunSource(models.TextChoices):
    """Where a run came from (API ``source``; filter ``?source=``)."""

    PLAYGROUND = "playground"  # started by Streamscope itself: playground, JSON API, manage.py stream
    GATEWAY = "gateway"  # an application's request through /gateway/<provider>/v1/
    IMPORT = "import"  # an imported recording
    FANOUT = "fanout"  # one variant of a fan-out group


class ReviewState(models.TextChoices):
    """Where a run stands in review; derived in one place: streams.review.verdicts.refresh_review_state."""

    UNREVIEWED = "unreviewed"
    APPROVED = "approved"
    FLAGGED = "flagged"
    REJECTED = "rejected"


class RunQuerySet(models.QuerySet):
    """Who may do what with runs: the one access rule every page, API view, consumer and tool uses.

    - *See* (read pages, API, websocket, export, compare, judge): the owner, staff and reviewers.
    - *Act* (cancel, replay as an upstream, make replay tokens): the owner and staff only.
    """

    def visible_to(self, user: Any) -> RunQuerySet:
        if not (user and user.is_authenticated and user.is_active):
            return self.none()
        if user.is_staff or is_reviewer(user):
            return self
        return self.filter(owner=user)

    def controllable_by(self, user: Any) -> RunQuerySet:
        if not (user and user.is_authenticated and user.is_active):
            return self.none()
        return self if user.is_staff else self.filter(owner=user)


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
    # Where the run came from: the playground (and API/CLI), the gateway, an import, a fan-out group.
    source = models.CharField(max_length=16, choices=RunSource.choices, default=RunSource.PLAYGROUND, db_index=True)
    source_name = models.CharField(max_length=255, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # Denormalised from the latest Verdict and the run's flags (review queue and admin filters).
    review_state = models.CharField(max_length=16, choices=ReviewState.choices, default=ReviewState.UNREVIEWED,
                                    db_index=True)
    # Figures of ``metrics`` copied into columns at the run's end, to sort, filter and summarise
    # on (streams.protocol.metrics.COLUMN_KEYS; each is defined in docs/metrics.md).
    ttfb_ms = models.FloatField(null=True, blank=True)
    ttfc_ms = models.FloatField(null=True, blank=True)
    ttft_ms = models.FloatField(null=True, blank=True)
    ttfr_ms = models.FloatField(null=True, blank=True)
    ttfa_ms = models.FloatField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    gap_p95_ms = models.FloatField(null=True, blank=True)  # inter-token gap, 95th percentile
    # Retention (docs/operations.md): a pinned run keeps its events; a pruned one says when they went.
    pinned = models.BooleanField(default=False)
    events_pruned_at = models.DateTimeField(null=True, blank=True)

    objects = RunQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["owner", "-created_at"]),
            models.Index(fields=["status"]),
            # Keyset pagination of the runs list: each sortable figure with the id as tiebreaker.
            models.Index(fields=["created_at", "id"], name="run_created_id"),
            models.Index(fields=["ttfb_ms", "id"], name="run_ttfb_id"),
            models.Index(fields=["ttfc_ms", "id"], name="run_ttfc_id"),
            models.Index(fields=["ttft_ms", "id"], name="run_ttft_id"),
            models.Index(fields=["ttfr_ms", "id"], name="run_ttfr_id"),
            models.Index(fields=["ttfa_ms", "id"], name="run_ttfa_id"),
            models.Index(fields=["duration_ms", "id"], name="run_duration_id"),
            models.Index(fields=["tokens_per_s", "id"], name="run_tokens_per_s_id"),
            models.Index(fields=["event_count", "id"], name="run_event_count_id"),
            # One model's runs by latency or speed (the planner would otherwise walk the figure's own
            # index past every other model's runs: 1.4 s at a million runs).
            models.Index(fields=["model", "ttft_ms", "id"], name="run_model_ttft_id"),
            models.Index(fields=["model", "duration_ms", "id"], name="run_model_duration_id"),
            models.Index(fields=["model", "tokens_per_s", "id"], name="run_model_tokens_per_s_id"),
            # Insights: one model or provider over a range of days.
            models.Index(fields=["model", "created_at"], name="run_model_created"),
            # Insights over a range, read from the index alone on PostgreSQL (INCLUDE; SQLite has no
            # covering indexes and gets a plain one): 0.7 s of table scan -> 0.13 s at 500,000 runs.
            models.Index(fields=["created_at"], name="run_insights_cover",
                         include=["id", "owner", "model", "provider", "status", "ttft_ms", "tokens_per_s",
                                  "duration_ms"]),
            models.Index(fields=["provider", "created_at"], name="run_provider_created"),
        ]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.provider}/{self.model}, {self.status})"

    @classmethod
    def from_db(cls, db: str | None, field_names: Any, values: Any) -> Run:
        """Every page, export and API answer reads runs through here: text that UTF-8 cannot encode
        (a lone surrogate stored before the edges cleaned input) is shown as U+FFFD instead of
        failing the whole page. New text is cleaned where it comes in; this covers what is stored."""
        run = super().from_db(db, field_names, values)
        for name in ("request", "error", "usage", "metrics"):
            value = run.__dict__.get(name)
            if isinstance(value, (dict, list)):
                try:
                    run.__dict__[name] = clean_json(value)
                except BadValue:
                    run.__dict__[name] = {"note": "not shown: nested too deeply"}
        if isinstance(run.__dict__.get("output_text"), str):
            run.__dict__["output_text"] = clean_text(run.__dict__["output_text"])
        return run

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def input_text(self) -> str:
        """The prompt: Responses ``input``, or the last user message of a Chat Completions body."""
        if not isinstance(self.request, dict):
            return ""
        if "input" not in self.request and isinstance(self.request.get("messages"), list):
            users = [m for m in self.request["messages"] if isinstance(m, dict) and m.get("role") == "user"]
            value = users[-1].get("content", "") if users else ""
        else:
            value = self.request.get("input", "")
        return value if isinstance(value, str) else json.dumps(value)

    def controllable_by(self, user: Any) -> bool:
        """The instance form of :meth:`RunQuerySet.controllable_by`."""
        return bool(user and user.is_authenticated and user.is_active and (user.is_staff or user.pk == self.owner_id))


class Event(models.Model):
    """One server-sent event as received.

    ``data`` holds the event's JSON text exactly as the upstream sent it (key order, unknown
    fields and ``obfuscation`` included), so exports reproduce the wire byte for byte.
    """

    # No index of its own: the unique (run, seq) index serves every lookup by run (its first
    # column), and a third b-tree to update cost ~6 of ~15 us of CPU per stored event on SQLite.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="events", db_index=False)
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


# --- Timelines: fan-out groups and replay tokens --------------------------------------------


class RunGroupQuerySet(models.QuerySet):
    def visible_to(self, user: Any) -> RunGroupQuerySet:
        """A group is seen by its owner and staff (its runs keep their own rule)."""
        if not (user and user.is_authenticated and user.is_active):
            return self.none()
        return self if user.is_staff else self.filter(owner=user)


class RunGroup(models.Model):
    """Runs started together from one prompt (a playground fan-out), compared side by side."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="run_groups")
    input = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    objects = RunGroupQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"Group {self.pk}"

    def run_ids(self) -> list[int]:
        """The group's runs in column order."""
        return list(self.members.order_by("position").values_list("run_id", flat=True))


class RunGroupMember(models.Model):
    """One variant of a group: which run, in which column, and what made it different."""

    group = models.ForeignKey(RunGroup, on_delete=models.CASCADE, related_name="members")
    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="group_membership")
    position = models.PositiveSmallIntegerField()
    label = models.CharField(max_length=200, blank=True, default="")

    class Meta:
        ordering = ["group", "position"]
        constraints = [
            models.UniqueConstraint(fields=["group", "position"], name="rungroupmember_position_unique")
        ]


class ReplayToken(models.Model):
    """A bearer token that lets an API client replay one run at /replay/<id>/v1/responses.

    Only a SHA-256 of the token is stored: it is shown once, when made, to the run's owner.
    """

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="replay_token")
    token_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"replay token of run {self.run_id}"


# --- Review: moderation rules, flags, verdicts -----------------------------------------------

REVIEWER_GROUP = "reviewer"


def is_reviewer(user: Any) -> bool:
    """Staff, or a member of the ``reviewer`` group. Cached on the user object (one query)."""
    if not (user and user.is_authenticated and user.is_active):
        return False
    if user.is_staff:
        return True
    cached = getattr(user, "_streamscope_reviewer", None)
    if cached is None:
        cached = user.groups.filter(name=REVIEWER_GROUP).exists()
        user._streamscope_reviewer = cached
    return cached


class ModerationRule(models.Model):
    """A keyword list or regular expression checked live against what a run streams."""

    class Kind(models.TextChoices):
        KEYWORDS = "keywords", "Keyword list"
        REGEX = "regex", "Regular expression"

    class Scope(models.TextChoices):
        OUTPUT_TEXT = "output_text", "Output text"
        REASONING = "reasoning", "Reasoning"
        TOOL_ARGUMENTS = "tool_arguments", "Tool arguments"
        INPUT = "input", "Input"

    class Action(models.TextChoices):
        FLAG = "flag", "Flag the run"
        STOP = "stop", "Flag and stop the run"

    name = models.CharField(max_length=100, unique=True)
    kind = models.CharField(max_length=16, choices=Kind.choices, default=Kind.KEYWORDS)
    patterns = models.TextField(help_text="Keyword list: one keyword or phrase per line. "
                                          "Regular expression: one pattern (Python syntax).")
    scope = models.CharField(max_length=20, choices=Scope.choices, default=Scope.OUTPUT_TEXT)
    action = models.CharField(max_length=8, choices=Action.choices, default=Action.FLAG)
    enabled = models.BooleanField(default=True)
    case_sensitive = models.BooleanField(default=False)
    whole_words = models.BooleanField(default=True, help_text="Keyword lists only: match whole words, "
                                                               "so “kill” does not match “skill”.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class RunFlag(models.Model):
    """A rule (or the moderation model) flagged a run: what matched, where, and at which event."""

    class Source(models.TextChoices):
        RULE = "rule", "Moderation rule"
        MODEL = "model", "Moderation model"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="flags")
    # The rule may be edited or deleted later; its name and action at match time are kept.
    rule = models.ForeignKey(ModerationRule, on_delete=models.SET_NULL, null=True, blank=True, related_name="flags")
    rule_name = models.CharField(max_length=200)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.RULE)
    action = models.CharField(max_length=8, choices=ModerationRule.Action.choices, default=ModerationRule.Action.FLAG)
    scope = models.CharField(max_length=20, choices=ModerationRule.Scope.choices)
    # Seq of the event where the rule first matched (None: the input, or the moderation model).
    seq = models.IntegerField(null=True, blank=True)
    location = models.CharField(max_length=100, blank=True, default="")
    matched_text = models.CharField(max_length=500, blank=True, default="")
    # Span of the match in the accumulated text of that field (output part, arguments...).
    start = models.PositiveIntegerField(null=True, blank=True)
    end = models.PositiveIntegerField(null=True, blank=True)
    context_before = models.CharField(max_length=200, blank=True, default="")
    context_after = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # A rule flags a run once: at its first match.
            models.UniqueConstraint(fields=["run", "rule"], condition=models.Q(rule__isnull=False),
                                    name="runflag_run_rule_unique"),
        ]

    def __str__(self) -> str:
        return f"run {self.run_id} flagged by {self.rule_name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.pk,
            "run": self.run_id,
            "rule": self.rule_id,
            "rule_name": self.rule_name,
            "source": self.source,
            "action": self.action,
            "scope": self.scope,
            "seq": self.seq,
            "location": self.location,
            "matched_text": self.matched_text,
            "start": self.start,
            "end": self.end,
            "context_before": self.context_before,
            "context_after": self.context_after,
            "created_at": self.created_at.isoformat() if self.created_at else None,
        }


class Verdict(models.Model):
    """One reviewer's decision on a run. Never edited: a new verdict is a new row."""

    class Kind(models.TextChoices):
        APPROVED = "approved", "Approve"
        FLAGGED = "flagged", "Flag"
        REJECTED = "rejected", "Reject"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="verdicts")
    reviewer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                                 related_name="verdicts")
    verdict = models.CharField(max_length=16, choices=Kind.choices)
    note = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["run", "-created_at"])]

    def __str__(self) -> str:
        return f"{self.verdict} on run {self.run_id}"


class ModerationResult(models.Model):
    """What an OpenAI-compatible /moderations endpoint said about a finished run's output."""

    run = models.OneToOneField(Run, on_delete=models.CASCADE, related_name="moderation")
    model = models.CharField(max_length=200, blank=True, default="")
    flagged = models.BooleanField(default=False)
    categories = models.JSONField(default=dict, blank=True)  # {"harassment": true, ...}
    category_scores = models.JSONField(default=dict, blank=True)
    error = models.JSONField(null=True, blank=True)  # {"message"} when the endpoint failed
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"moderation of run {self.run_id}"

    @property
    def flagged_categories(self) -> list[str]:
        return sorted(name for name, hit in (self.categories or {}).items() if hit)


# --- Insights roll-up (streams/history/rollup.py; docs/metrics.md, "The roll-up") -------------


class RunRollup(models.Model):
    """Ended runs summed per hour or day, per model (of a provider) or per provider (every model):
    counts per outcome, flagged runs, and a log-spaced histogram of each insights figure. Written
    only by the fold (streams.history.rollup.fold), from the runs themselves, so it can always be
    rebuilt."""

    start = models.DateTimeField()
    span = models.CharField(max_length=4)  # "hour" or "day"
    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=200, blank=True, default="")  # "" on an every-model row
    every_model = models.BooleanField(default=False)
    runs = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    incomplete = models.PositiveIntegerField(default=0)
    cancelled = models.PositiveIntegerField(default=0)
    interrupted = models.PositiveIntegerField(default=0)
    flagged = models.PositiveIntegerField(default=0)
    # figure -> [runs with the figure known, p50, p95, p99] of this row alone (read when a chart point is one row)
    figures = models.JSONField(default=dict)
    # figure -> "first bin:count,count,..." (merged when a point or a group spans several rows)
    histograms = models.JSONField(default=dict)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["span", "start", "every_model", "provider", "model"],
                                    name="runrollup_cell_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.span} {self.start:%Y-%m-%d %H:00} {self.provider}/{self.model or '*'}"


class RollupMark(models.Model):
    """An hour x model x provider whose roll-up rows may be out of date: written by database triggers
    when a run ends, changes after its end, is deleted, or gains or loses a flag; the fold recomputes
    the marked hours and deletes the marks it read."""

    created_at = models.DateTimeField(db_index=True)  # the run's, so its hour
    model = models.CharField(max_length=200)
    provider = models.CharField(max_length=64)

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:00} {self.provider}/{self.model}"
