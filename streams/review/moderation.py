"""Live moderation: enabled rules checked against a run's partial output while it streams.

The runner owns one :class:`LiveModerator` per run. ``load(run)`` reads the enabled rules
(and checks the input), ``observe(seq, type, payload)`` is called for every event as it is
recorded (pure CPU, bounded work: see streams/review/rules.py), and ``commit()`` after each batch is
stored stores the new flags and publishes them to the run's viewers (message ``run.flag``).
A match of a rule whose action is ``stop`` raises :class:`ModerationStopped` right where the
event was recorded; the runner then closes the upstream and ends the run ``cancelled``.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from channels.db import database_sync_to_async
from django.db import transaction

from streams.models import ModerationRule, Run, RunFlag
from streams.pipeline.broadcast import publish_flag
from streams.protocol.catalogue import CHAT_CHUNK, DELTA, TERMINAL, describe
from streams.protocol.values import clean_text
from streams.review import moderation_model
from streams.review.rules import Match, RuleError, StreamMatcher, compile_rule
from streams.review.verdicts import refresh_review_state

log = logging.getLogger(__name__)

Scope = ModerationRule.Scope
# What each kind of delta accumulates into (streams.protocol.catalogue's ``field``) → the rule scope.
SCOPE_OF_FIELD = {
    "text": Scope.OUTPUT_TEXT,
    "refusal": Scope.OUTPUT_TEXT,
    "transcript": Scope.OUTPUT_TEXT,
    "summary_text": Scope.REASONING,
    "reasoning_text": Scope.REASONING,
    "arguments": Scope.TOOL_ARGUMENTS,
    "input": Scope.TOOL_ARGUMENTS,
    "code": Scope.TOOL_ARGUMENTS,
    "command": Scope.TOOL_ARGUMENTS,
    "diff": Scope.TOOL_ARGUMENTS,
}
FINAL_TYPES = frozenset({"error", "streamscope.done"})


@dataclass(frozen=True)
class RuleInfo:
    id: int
    name: str
    scope: str
    action: str


@dataclass
class FlagHit:
    rule: RuleInfo
    match: Match
    location: str


class ModerationStopped(Exception):
    """A ``stop`` rule matched: the run must end now."""

    def __init__(self, hit: FlagHit) -> None:
        self.hit = hit
        where = "in the input (the request was not sent)" if hit.match.seq is None else f"at event #{hit.match.seq}"
        super().__init__(f"stopped by moderation rule “{hit.rule.name}”: matched “{hit.match.text[:80]}” "
                         f"in {Scope(hit.rule.scope).label.lower()} {where}")

    def error(self) -> dict[str, Any]:
        return {"message": str(self), "code": "moderation_stopped", "rule": self.hit.rule.name,
                "seq": self.hit.match.seq}


def fields_of(event_type: str, payload: Any) -> list[tuple[str, str, str, str]]:
    """The streamed text pieces an event carries: ``(scope, field key, location label, text)``."""
    if not isinstance(payload, dict):
        return []
    if event_type == CHAT_CHUNK:
        return _chat_fields(payload)
    kind = describe(event_type)
    if kind.phase != DELTA:
        return []
    scope = SCOPE_OF_FIELD.get(kind.field or "")
    delta = payload.get("delta")
    if scope is None or not isinstance(delta, str) or not delta:
        return []
    item = payload.get("output_index")
    if not isinstance(item, int):
        item = payload.get("item_id") or "-"
    sub = next((payload[k] for k in ("content_index", "summary_index", "command_index")
                if isinstance(payload.get(k), int)), 0)
    key = f"{kind.field}:{item}:{sub}"
    location = f"output {item}" + (f" · part {sub}" if sub else "") + f" · {kind.field.replace('_', ' ')}"
    return [(scope, key, location, delta)]


def _chat_fields(chunk: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    found = []
    for choice in chunk.get("choices") or []:
        if not isinstance(choice, dict) or not isinstance(choice.get("delta"), dict):
            continue
        index, delta = choice.get("index", 0), choice["delta"]
        for name, scope in (("content", Scope.OUTPUT_TEXT), ("refusal", Scope.OUTPUT_TEXT),
                            ("reasoning_content", Scope.REASONING), ("reasoning", Scope.REASONING)):
            if isinstance(delta.get(name), str) and delta[name]:
                found.append((scope, f"chat:{index}:{name}", f"choice {index} · {name.replace('_', ' ')}", delta[name]))
        for call in delta.get("tool_calls") or []:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str) and function["arguments"]:
                position = call.get("index", 0)
                found.append((Scope.TOOL_ARGUMENTS, f"chat:{index}:tool{position}",
                              f"choice {index} · tool call {position}", function["arguments"]))
    return found


def input_text(run: Run) -> str:
    """What the person asked: the Responses ``input``, or a chat request's message contents."""
    request = run.request if isinstance(run.request, dict) else {}
    if "input" in request or not isinstance(request.get("messages"), list):
        return run.input_text
    texts = []
    for message in request["messages"]:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return "\n\n".join(texts)


def enabled_rules() -> list[ModerationRule]:
    return list(ModerationRule.objects.filter(enabled=True).order_by("pk"))


class LiveModerator:
    """Checks one run's streamed text against the enabled rules; see the module docstring."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.rules: dict[int, RuleInfo] = {}
        self.matchers: dict[str, StreamMatcher] = {}
        self.locations: dict[str, str] = {}
        self.pending: list[FlagHit] = []
        self.stopped: FlagHit | None = None
        self._model_checked = False

    def configure(self, rules: list[ModerationRule]) -> None:
        by_scope: dict[str, dict[int, Any]] = defaultdict(dict)
        for rule in rules:
            try:
                matcher = compile_rule(rule.kind, rule.patterns, case_sensitive=rule.case_sensitive,
                                       whole_words=rule.whole_words)
            except RuleError as exc:  # saved before a stricter check: skip it, never break a run
                log.warning("moderation rule %s (%s) is not usable and was skipped: %s", rule.pk, rule.name, exc)
                continue
            self.rules[rule.pk] = RuleInfo(rule.pk, rule.name, rule.scope, rule.action)
            by_scope[rule.scope][rule.pk] = matcher
        self.matchers = {scope: StreamMatcher(matchers) for scope, matchers in by_scope.items()}

    async def load(self, run: Run) -> None:
        """Read the enabled rules; check the input at once (a stop rule there raises)."""
        self.start(run, await database_sync_to_async(enabled_rules)())

    def start(self, run: Run, rules: list[ModerationRule]) -> None:
        """:meth:`load` with the rules already read (the gateway reads them with its run)."""
        self.configure(rules)
        matcher = self.matchers.get(Scope.INPUT)
        if matcher is not None:
            self._collect(matcher.feed("input", None, input_text(run), final=True), {"input": "input"})
            self._raise_if_stopped()

    def observe(self, seq: int, event_type: str, payload: Any) -> None:
        """One recorded event. Raises :class:`ModerationStopped` when a stop rule matched."""
        if not self.matchers or self.stopped is not None:
            return
        for scope, key, location, text in fields_of(event_type, payload):
            matcher = self.matchers.get(scope)
            if matcher is not None:
                self.locations[key] = location
                self._collect(matcher.feed(key, seq, text), self.locations)
        if event_type in FINAL_TYPES or describe(event_type).phase == TERMINAL:
            self.finish()
        self._raise_if_stopped()

    def finish(self) -> None:
        """The stream is over: matches held back at the end of a field count now."""
        for matcher in self.matchers.values():
            self._collect(matcher.finish(), self.locations)

    def _collect(self, hits: list[tuple[int, Match]], locations: dict[str, str]) -> None:
        for rule_id, match in hits:
            self.pending.append(FlagHit(self.rules[rule_id], match, locations.get(match.key, match.key)))

    def _raise_if_stopped(self) -> None:
        if self.stopped is not None:
            return
        for hit in self.pending:
            if hit.rule.action == ModerationRule.Action.STOP:
                self.stopped = hit
                raise ModerationStopped(hit)

    async def commit(self, final: bool = False) -> list[dict[str, Any]]:
        """Store the flags found since the last commit and publish them to the run's viewers."""
        if final and self.stopped is None:
            self.finish()
        flags: list[dict[str, Any]] = []
        if self.pending:
            hits, self.pending = self.pending, []
            try:
                flags = await database_sync_to_async(store_flags)(self.run_id, hits)
            except BaseException:
                self.pending = hits + self.pending  # kept for the next commit (the run's end at the latest)
                raise
            for flag in flags:
                await publish_flag(self.run_id, flag)
        if final and not self._model_checked and moderation_model.configured():
            self._model_checked = True
            moderation_model.schedule(self.run_id)
        return flags


def store_flags(run_id: int, hits: list[FlagHit]) -> list[dict[str, Any]]:
    """Store each rule's first match as a RunFlag (once per rule) and refresh the review state."""
    alive = set(ModerationRule.objects.filter(pk__in=[h.rule.id for h in hits]).values_list("pk", flat=True))
    stored = []
    with transaction.atomic():
        for hit in hits:
            match = hit.match
            fields = {
                "rule_name": hit.rule.name[:200],
                "source": RunFlag.Source.RULE,
                "action": hit.rule.action,
                "scope": hit.rule.scope,
                "seq": match.seq,
                # Upstream text: a lone surrogate or NUL becomes U+FFFD (one character for one,
                # so start and end still point into the run's stored output).
                "location": clean_text(hit.location[:100]),
                "matched_text": clean_text(match.text[:500]),
                "start": match.start,
                "end": match.end,
                "context_before": clean_text(match.before[-200:]),
                "context_after": clean_text(match.after[:200]),
            }
            if hit.rule.id in alive:
                flag, created = RunFlag.objects.get_or_create(run_id=run_id, rule_id=hit.rule.id, defaults=fields)
            else:  # the rule was deleted while the run streamed: keep the flag, without the link
                flag, created = RunFlag.objects.create(run_id=run_id, rule=None, **fields), True
            if created:
                stored.append(flag.to_json())
        refresh_review_state(run_id)
    return stored


