"""The admin: runs (read-only, with their output, events page by page, flags and verdicts),
moderation rules (with a test box), and the flag and verdict history (read-only).

Recorded data is never edited here: runs and events have no add/change/delete permission;
a run's review state changes only through verdicts (actions here or the review queue).
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.paginator import Paginator
from django.db.models import Count, Exists, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.functional import cached_property

from streams.history import fleet
from streams.history.export import export_jsonl
from streams.models import ModerationResult, ModerationRule, Run, RunFlag, Verdict, is_reviewer
from streams.protocol.rebuild import rebuild_output
from streams.protocol.values import BadValue, parse_id
from streams.review.rules import RuleError, compile_rule, find_all
from streams.review.verdicts import history, record_verdicts

EVENTS_PER_PAGE = 100
EVENT_DATA_PREVIEW = 2000
SAMPLE_MAX_CHARS = 20_000


# --- run list filters -----------------------------------------------------------------------

class HasFlagsFilter(admin.SimpleListFilter):
    title = "flags"
    parameter_name = "flagged"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Flagged by a rule or model"), ("no", "No flags")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        flagged = RunFlag.objects.values("run_id")
        if self.value() == "yes":
            return queryset.filter(pk__in=flagged)
        if self.value() == "no":
            return queryset.exclude(pk__in=flagged)
        return queryset


class FlaggedByRuleFilter(admin.SimpleListFilter):
    title = "flagged by rule"
    parameter_name = "rule"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(str(rule.pk), rule.name) for rule in ModerationRule.objects.order_by("name")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        try:
            rule_id = parse_id(self.value(), "rule") if self.value() else None
        except BadValue:
            return queryset.none()
        if rule_id is not None:
            return queryset.filter(pk__in=RunFlag.objects.filter(rule_id=rule_id).values("run_id"))
        return queryset


class BucketFilter(admin.SimpleListFilter):
    """Ranges of a number stored in a JSON field (metrics or usage)."""

    lookup: str = ""
    buckets: list[tuple[str, str, float | None, float | None]] = []

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, label, _, _ in self.buckets]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        for key, _, low, high in self.buckets:
            if self.value() == key:
                if low is not None:
                    queryset = queryset.filter(**{f"{self.lookup}__gte": low})
                if high is not None:
                    queryset = queryset.filter(**{f"{self.lookup}__lt": high})
        return queryset


class DurationFilter(BucketFilter):
    title = "duration"
    parameter_name = "duration"
    lookup = "duration_ms"  # the indexed column (docs/metrics.md), not the JSON
    buckets = [("lt1", "under 1 s", None, 1000), ("1to10", "1–10 s", 1000, 10_000),
               ("10to60", "10–60 s", 10_000, 60_000), ("gt60", "over a minute", 60_000, None)]


class TokensFilter(BucketFilter):
    title = "output tokens"
    parameter_name = "tokens"
    lookup = "usage__output_tokens"
    buckets = [("lt100", "under 100", None, 100), ("100to1k", "100–1,000", 100, 1000),
               ("gt1k", "over 1,000", 1000, None)]


class DistinctValuesFilter(admin.SimpleListFilter):
    """A filter on a plain column whose choices (its distinct values) are read at most once a minute:
    Django's own field filter scans the whole table for them on every page of the list."""

    field = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        def read() -> list[str]:
            return list(Run.objects.order_by(self.field).values_list(self.field, flat=True).distinct()[:200])

        return [(value, value) for value in cache.get_or_set(f"streamscope-admin-{self.field}", read, 60)]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        return queryset.filter(**{self.field: self.value()}) if self.value() else queryset


class ProviderFilter(DistinctValuesFilter):
    title = parameter_name = field = "provider"


class ModelFilter(DistinctValuesFilter):
    title = parameter_name = field = "model"


class OwnerFilter(admin.SimpleListFilter):
    """Owners who have runs, read at most once a minute (not a scan of every run per page)."""

    title = "owner"
    parameter_name = "owner__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        def read() -> list[tuple[str, str]]:
            owners = get_user_model().objects.filter(Exists(Run.objects.filter(owner=OuterRef("pk"))))
            users = owners.order_by("username")[:200]
            return [(str(user.pk), user.get_username()) for user in users]

        return cache.get_or_set("streamscope-admin-owners", read, 60)

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        try:
            return queryset.filter(owner_id=parse_id(self.value(), "owner")) if self.value() else queryset
        except BadValue:
            return queryset.none()


class CappedPaginator(Paginator):
    """Counts at most :attr:`CAP` + 1 rows: a COUNT(*) over a million runs took 0.9 s on PostgreSQL.
    Past the cap the list says "10001 runs" and pages stop there; filters narrow it down."""

    CAP = 10_000

    @cached_property
    def count(self) -> int:
        return self.object_list[: self.CAP + 1].count()


# --- runs -----------------------------------------------------------------------------------

@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    list_display = ("id", "status", "provider", "model", "owner", "created_at", "duration", "tokens",
                    "review_state", "flag_count")
    list_display_links = ("id",)
    list_filter = ("status", "review_state", HasFlagsFilter, FlaggedByRuleFilter, ProviderFilter, ModelFilter,
                   OwnerFilter, "source", "created_at", DurationFilter, TokensFilter, "pinned", "imported")
    search_fields = ("output_text",)  # the search itself: get_search_results
    search_help_text = "Searches the input and the output text (full-text: every word must appear)."
    # No date_hierarchy: its year/month links are a DISTINCT over every run (1.6 s at 1,000,000 runs on
    # PostgreSQL); the "created at" filter gives the same ranges.
    paginator = CappedPaginator
    list_select_related = ("owner",)
    list_per_page = 50
    show_full_result_count = False
    actions = ("approve_selected", "flag_selected", "reject_selected", "export_selected")
    change_form_template = "admin/streams/run/change_form.html"
    fields = ("owner", "provider", "model", "status", "review_state", "created_at", "started_at", "finished_at",
              "event_count", "output_tokens", "response_id", "background", "imported", "source_name", "error",
              "metrics", "usage")
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # A subquery per listed row, not a join grouped over every run.
        flags = RunFlag.objects.filter(run=OuterRef("pk")).order_by().values("run").annotate(n=Count("pk")).values("n")
        return super().get_queryset(request).annotate(
            flag_count=Coalesce(Subquery(flags, output_field=IntegerField()), Value(0)))

    def get_search_results(self, request: HttpRequest, queryset: QuerySet, search_term: str) -> tuple[QuerySet, bool]:
        """The runs list's full-text search (PostgreSQL GIN / SQLite FTS5), not LIKE over JSON."""
        return fleet.search(queryset, search_term[:200]), False

    # Recorded data: viewable, never added, changed or deleted here (deleting would also
    # delete its events, which this admin never touches).
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_review_permission(self, request: HttpRequest) -> bool:
        return is_reviewer(request.user)

    @admin.display(description="duration", ordering="duration_ms")
    def duration(self, run: Run) -> str:
        value = run.duration_ms if run.duration_ms is not None else (run.metrics or {}).get("duration_ms")
        if value is None:
            return "–"
        return f"{value / 1000:.1f} s" if value >= 10_000 else f"{value:.0f} ms"

    @admin.display(description="tokens")
    def tokens(self, run: Run) -> str:
        value = self.output_tokens(run)
        return "–" if value is None else str(value)

    @admin.display(description="output tokens")
    def output_tokens(self, run: Run) -> int | None:
        usage = run.usage or {}
        value = usage.get("output_tokens", usage.get("completion_tokens"))
        return value if isinstance(value, int) else (run.metrics or {}).get("output_tokens")

    @admin.display(description="flags", ordering="flag_count")
    def flag_count(self, run: Run) -> int:
        return run.flag_count

    # --- actions ---

    def _verdict_action(self, request: HttpRequest, queryset: QuerySet, verdict: str, label: str) -> None:
        count = record_verdicts(queryset, request.user, verdict, note="bulk action in the admin")
        self.message_user(request, f"{label} {count} run{'s' if count != 1 else ''}.", messages.SUCCESS)

    @admin.action(description="Approve selected runs", permissions=["review"])
    def approve_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verdict_action(request, queryset, Verdict.Kind.APPROVED, "Approved")

    @admin.action(description="Flag selected runs", permissions=["review"])
    def flag_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verdict_action(request, queryset, Verdict.Kind.FLAGGED, "Flagged")

    @admin.action(description="Reject selected runs", permissions=["review"])
    def reject_selected(self, request: HttpRequest, queryset: QuerySet) -> None:
        self._verdict_action(request, queryset, Verdict.Kind.REJECTED, "Rejected")

    @admin.action(description="Export selected runs (zip of JSONL)", permissions=["view"])
    def export_selected(self, request: HttpRequest, queryset: QuerySet) -> FileResponse:
        # Spooled: small exports stay in memory, big ones go to a temporary file.
        buffer = tempfile.SpooledTemporaryFile(max_size=16 * 1024 * 1024)
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for run in queryset.order_by("pk"):
                with archive.open(f"run-{run.pk}.jsonl", "w") as entry:
                    for piece in export_jsonl(run):
                        entry.write(piece.encode("utf-8"))
        buffer.seek(0)
        return FileResponse(buffer, as_attachment=True, filename="streamscope-runs.zip", content_type="application/zip")

    # --- the run page: request, rebuilt output, events page by page ---

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        run = self.get_object(request, object_id)
        extra = dict(extra_context or {})
        if run is not None and self.has_view_permission(request, run):
            extra.update(run_review_context(run, request.GET.get("events_page")))
        return super().change_view(request, object_id, form_url, extra_context=extra)


def _stored_events(run: Run):
    """``(type, payload)`` pairs read in chunks, so no run is ever loaded whole."""
    for event_type, data in run.events.order_by("seq").values_list("type", "data").iterator(chunk_size=2000):
        try:
            yield event_type, json.loads(data)
        except ValueError:
            yield event_type, None


def run_review_context(run: Run, events_page: str | None) -> dict[str, Any]:
    rebuilt = rebuild_output(_stored_events(run))
    events = run.events.order_by("seq").values_list("seq", "t", "type", "data")
    page = Paginator(events, EVENTS_PER_PAGE).get_page(events_page)
    rows = [
        {"seq": seq, "t": t, "type": event_type, "data": data[:EVENT_DATA_PREVIEW],
         "cut": max(0, len(data) - EVENT_DATA_PREVIEW)}
        for seq, t, event_type, data in page.object_list
    ]
    flags = list(run.flags.select_related("rule"))
    for flag in flags:  # the events page holding the event where the rule first matched
        flag.event_page = flag.seq // EVENTS_PER_PAGE + 1 if flag.seq is not None else None
    return {
        "run_obj": run,
        "request_json": json.dumps(run.request, indent=2, ensure_ascii=False),
        "rebuilt": rebuilt,
        "rebuilt_items": [{"index": item.output_index, "type": item.type, "status": item.status, "text": item.text,
                           "json": json.dumps(item.item, indent=2, ensure_ascii=False)[:20_000]}
                          for item in rebuilt.items],
        "events_page": page,
        "event_rows": rows,
        "flags": flags,
        "verdicts": history(run),
        "moderation": ModerationResult.objects.filter(run=run).first(),
        "review_url": reverse("review_queue") + f"?run={run.pk}",
    }


# --- moderation rules -------------------------------------------------------------------------

class ModerationRuleForm(forms.ModelForm):
    """A rule is saved only when it compiles (a bad regex, an empty list, a pattern too slow)."""

    class Meta:
        model = ModerationRule
        fields = "__all__"

    def clean(self) -> dict:
        data = super().clean()
        if "patterns" in self.errors:
            return data
        try:
            compile_rule(data.get("kind") or ModerationRule.Kind.KEYWORDS, data.get("patterns") or "",
                         case_sensitive=bool(data.get("case_sensitive")), whole_words=bool(data.get("whole_words")))
        except RuleError as exc:
            self.add_error("patterns", str(exc))
        return data


@admin.register(ModerationRule)
class ModerationRuleAdmin(admin.ModelAdmin):
    form = ModerationRuleForm
    list_display = ("name", "kind", "scope", "action", "enabled", "case_sensitive", "runs_flagged", "updated_at")
    list_filter = ("enabled", "kind", "scope", "action")
    search_fields = ("name", "patterns")
    list_editable = ("enabled",)
    change_form_template = "admin/streams/moderationrule/change_form.html"
    fieldsets = (
        (None, {"fields": ("name", "enabled", "kind", "patterns", "scope", "action")}),
        ("Matching", {"fields": ("case_sensitive", "whole_words")}),
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).annotate(flag_total=Count("flags"))

    @admin.display(description="runs flagged", ordering="flag_total")
    def runs_flagged(self, rule: ModerationRule) -> int:
        return rule.flag_total

    def get_urls(self) -> list:
        test = path("test/", self.admin_site.admin_view(self.test_view), name="streams_moderationrule_test")
        return [test, *super().get_urls()]

    def test_view(self, request: HttpRequest) -> HttpResponse:
        """What a rule (as typed, saved or not) matches in a sample text. JSON for the test box."""
        if not self.has_view_permission(request):
            return JsonResponse({"error": "You may not view moderation rules."}, status=403)
        data = request.POST if request.method == "POST" else request.GET
        result = test_rule(data)
        if request.headers.get("Accept", "").startswith("application/json"):
            return JsonResponse(result, status=200 if result["error"] is None else 400)
        context = {**self.admin_site.each_context(request), "title": "Test a moderation rule",
                   "opts": self.model._meta, "data": data, "result": result,
                   "kinds": ModerationRule.Kind.choices}
        return TemplateResponse(request, "admin/streams/moderationrule/test_rule.html", context)


def test_rule(data: Any) -> dict[str, Any]:
    """Compile the rule given in ``data`` and match it against ``data["sample"]``."""
    sample = str(data.get("sample") or "")
    truncated = len(sample) > SAMPLE_MAX_CHARS
    sample = sample[:SAMPLE_MAX_CHARS]
    result: dict[str, Any] = {"error": None, "matches": [], "segments": [], "truncated": truncated}
    if not data.get("patterns"):
        return result
    try:
        matcher = compile_rule(str(data.get("kind") or ModerationRule.Kind.KEYWORDS), str(data.get("patterns")),
                               case_sensitive=_checked(data, "case_sensitive"),
                               whole_words=_checked(data, "whole_words"))
    except RuleError as exc:
        result["error"] = str(exc)
        return result
    spans = find_all(matcher, sample)
    result["matches"] = [{"start": start, "end": end, "text": text} for start, end, text in spans]
    position = 0
    for start, end, _ in spans:
        if start < position:
            continue
        result["segments"].append({"text": sample[position:start], "match": False})
        result["segments"].append({"text": sample[start:end], "match": True})
        position = end
    result["segments"].append({"text": sample[position:], "match": False})
    return result


def _checked(data: Any, name: str) -> bool:
    return str(data.get(name) or "").lower() in ("on", "1", "true", "yes")


# --- history (read-only) ----------------------------------------------------------------------

class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(RunFlag)
class RunFlagAdmin(ReadOnlyAdmin):
    list_display = ("run", "rule_name", "source", "action", "scope", "seq", "matched_text", "created_at")
    list_filter = ("source", "action", "scope", "rule")
    search_fields = ("rule_name", "matched_text")
    list_select_related = ("run",)
    raw_id_fields = ("run",)


@admin.register(Verdict)
class VerdictAdmin(ReadOnlyAdmin):
    list_display = ("run", "verdict", "reviewer", "created_at", "note")
    list_filter = ("verdict", ("reviewer", admin.RelatedOnlyFieldListFilter))
    search_fields = ("note",)
    list_select_related = ("run", "reviewer")
    raw_id_fields = ("run",)
