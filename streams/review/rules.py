"""Moderation rules as matchers: validate and compile a rule, then find its first match in text
that arrives in pieces (deltas), with bounded work per piece.

Each streamed field (an output text part, a function call's arguments...) keeps a rolling tail of
its last few characters; a new delta is searched together with the tail, so a keyword split
across deltas ("for" + "bidden") is found, while the work per delta stays proportional to the
delta plus a fixed look-back. Why a slow rule cannot stall a stream: see docs/review.md.
"""

from __future__ import annotations

import bisect
import logging
import re
import time
from dataclasses import dataclass, field

from streams.review.sre_shim import sre_constants, sre_parse

log = logging.getLogger(__name__)

KEYWORDS = "keywords"
REGEX = "regex"

MAX_PATTERN_CHARS = 4000
MAX_KEYWORDS = 500
MAX_KEYWORD_CHARS = 200
# Characters of earlier text kept for a regex whose longest match is unbounded or very long:
# a match longer than this that spans two deltas can be missed (documented in docs/review.md).
REGEX_DEFAULT_LOOKBACK = 256
REGEX_MAX_LOOKBACK = 1024
# New text is searched in slices of at most this many characters, so one enormous delta never
# becomes one enormous regex search.
SLICE_CHARS = 4096
CONTEXT_CHARS = 40
# A last line of defence (validation refuses the known catastrophic shapes): a rule is suspended
# for the rest of a run when one search takes over SLOW_SEARCH_S, when its searches average over
# SLOW_MEAN_S (after MEAN_AFTER searches: a normal search takes microseconds, and a busy machine's
# occasional preemption must not look like a slow rule), or when they add up to RULE_BUDGET_S.
SLOW_SEARCH_S = 1.0
SLOW_MEAN_S = 0.005
MEAN_AFTER = 50
RULE_BUDGET_S = 5.0


class RuleError(ValueError):
    """A rule that cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class Matcher:
    pattern: re.Pattern[str]
    lookback: int  # characters of earlier text searched with each new piece
    hold_edge: bool  # a match touching the end of the text so far may still change: wait


def compile_rule(kind: str, patterns: str, *, case_sensitive: bool = False, whole_words: bool = True) -> Matcher:
    """A :class:`Matcher` for a rule, or :class:`RuleError` saying what is wrong with it."""
    if len(patterns or "") > MAX_PATTERN_CHARS:
        raise RuleError(f"The patterns are too long ({len(patterns)} characters; the limit is {MAX_PATTERN_CHARS}).")
    flags = 0 if case_sensitive else re.IGNORECASE
    if kind == KEYWORDS:
        return _compile_keywords(patterns, flags, whole_words)
    if kind == REGEX:
        return _compile_regex(patterns, flags)
    raise RuleError(f"Unknown rule kind {kind!r}: use 'keywords' or 'regex'.")


def keywords_of(patterns: str) -> list[str]:
    return [line.strip() for line in (patterns or "").splitlines() if line.strip()]


def _compile_keywords(patterns: str, flags: int, whole_words: bool) -> Matcher:
    words = keywords_of(patterns)
    if not words:
        raise RuleError("Enter at least one keyword (one per line).")
    if len(words) > MAX_KEYWORDS:
        raise RuleError(f"Too many keywords ({len(words)}; the limit is {MAX_KEYWORDS}).")
    too_long = [w for w in words if len(w) > MAX_KEYWORD_CHARS]
    if too_long:
        raise RuleError(f"Keywords are limited to {MAX_KEYWORD_CHARS} characters: “{too_long[0][:40]}…” is longer.")
    # Keywords grouped by whether they start / end with a word character, so each group's
    # whole-word checks are written once around its alternation: a lookaround repeated in every
    # alternative stops the regex engine's fast scanning (8x slower, measured).
    groups: dict[tuple[bool, bool], list[str]] = {}
    for word in sorted(set(words), key=lambda w: (-len(w), w)):
        ends = (whole_words and _is_word_char(word[0]), whole_words and _is_word_char(word[-1]))
        groups.setdefault(ends, []).append(re.escape(word))
    alternatives = []
    for (word_start, word_end), escaped in groups.items():
        # Lookarounds instead of \b: exact at both ends, whatever the keyword starts with.
        alternatives.append((r"(?<!\w)" if word_start else "") + "(?:" + "|".join(escaped) + ")"
                            + (r"(?!\w)" if word_end else ""))
    pattern = re.compile("|".join(alternatives), flags)
    longest = max(len(w) for w in words)
    hold = whole_words and any(_is_word_char(w[-1]) for w in words)
    # One more character than the longest keyword: the character before a match is context.
    return Matcher(pattern, lookback=longest + 1, hold_edge=hold)


def _is_word_char(char: str) -> bool:
    return bool(re.match(r"\w", char))


def _compile_regex(patterns: str, flags: int) -> Matcher:
    source = (patterns or "").strip()
    if not source:
        raise RuleError("Enter a regular expression.")
    try:
        pattern = re.compile(source, flags)
        tree = sre_parse.parse(source, flags)
    except re.error as exc:
        where = f" at position {exc.pos}" if exc.pos is not None else ""
        raise RuleError(f"This is not a valid regular expression: {exc.msg}{where}.") from exc
    except (OverflowError, RecursionError) as exc:
        raise RuleError(f"This regular expression is too complex to use: {exc}.") from exc
    low, high = tree.getwidth()
    if low == 0:
        raise RuleError("This regular expression can match empty text, so it would flag every run. "
                        "Make it require at least one character (e.g. use + instead of *).")
    _check_backtracking(tree.data if hasattr(tree, "data") else list(tree), inside_repeat=False)
    if high < sre_constants.MAXREPEAT and high + 1 <= REGEX_MAX_LOOKBACK:
        lookback = high + 1
    else:
        lookback = REGEX_DEFAULT_LOOKBACK
    return Matcher(pattern, lookback=lookback, hold_edge=True)


_REPEATS = {sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT}
_SLOW_MESSAGE = ("This regular expression could take exponential time on some text ({why}), which would stall "
                 "live streams. Rewrite it without that shape, or make the inner part possessive (a++) "
                 "or atomic ((?>…)).")


def _check_backtracking(items: list, inside_repeat: bool) -> None:
    """Refuse the shapes that make backtracking explode: nested variable quantifiers,
    ambiguous alternatives under a quantifier, and backreferences."""
    for op, av in items:
        if op in _REPEATS:
            low, high, body = av
            variable = high != low
            if inside_repeat and variable:
                raise RuleError(_SLOW_MESSAGE.format(why="a quantifier inside another quantifier, like (a+)+"))
            repeats = high > 1
            if repeats:
                _check_ambiguous_branches(list(body))
            _check_backtracking(list(body), inside_repeat or repeats)
        elif op == sre_constants.POSSESSIVE_REPEAT or op == sre_constants.ATOMIC_GROUP:
            continue  # no backtracking into these
        elif op in (sre_constants.GROUPREF, sre_constants.GROUPREF_EXISTS):
            raise RuleError("Backreferences (\\1, (?P=name), (?(1)…)) are not allowed in moderation rules: "
                            "they can make matching very slow.")
        elif op == sre_constants.SUBPATTERN:
            _check_backtracking(list(av[-1]), inside_repeat)
        elif op == sre_constants.BRANCH:
            for alternative in av[1]:
                _check_backtracking(list(alternative), inside_repeat)
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            _check_backtracking(list(av[1]), inside_repeat)


def _check_ambiguous_branches(items: list) -> None:
    """Alternatives under a quantifier must start differently, or (a|ab)* backtracks without end."""
    for op, av in items:
        if op == sre_constants.SUBPATTERN:
            _check_ambiguous_branches(list(av[-1]))
        elif op == sre_constants.BRANCH:
            seen: set[int] = set()
            for alternative in av[1]:
                first = _first_chars(list(alternative))
                if first is None or first & seen:
                    raise RuleError(_SLOW_MESSAGE.format(
                        why="alternatives under a quantifier that can start with the same character, like (a|ab)+"))
                seen |= first


def _first_chars(items: list) -> set[int] | None:
    """Code points an alternative can start with, or None when that is not a small known set."""
    if not items:
        return None
    op, av = items[0]
    if op == sre_constants.LITERAL:
        return {av, *_case_variants(av)}
    if op == sre_constants.IN and all(o == sre_constants.LITERAL for o, _ in av):
        chars: set[int] = set()
        for _, code in av:
            chars |= {code, *_case_variants(code)}
        return chars
    if op == sre_constants.SUBPATTERN:
        return _first_chars(list(av[-1]))
    return None


def _case_variants(code: int) -> set[int]:
    char = chr(code)
    return {ord(c) for c in (char.lower(), char.upper()) if len(c) == 1}


@dataclass
class Match:
    """A rule's first match in one field's accumulated text."""

    key: str  # which field (see streams.review.moderation)
    seq: int | None  # the event whose piece completed the match
    start: int  # offsets in the field's accumulated text
    end: int
    text: str
    before: str
    after: str


@dataclass
class _Tail:
    text: str = ""
    offset: int = 0  # position of text[0] in the field's accumulated text
    pieces: list[tuple[int, int | None]] = field(default_factory=list)  # (start offset, seq)

    def seq_at(self, position: int) -> int | None:
        index = bisect.bisect_right(self.pieces, position, key=lambda piece: piece[0]) - 1
        return self.pieces[max(index, 0)][1] if self.pieces else None


class StreamMatcher:
    """First match of each of several rules over many streamed fields.

    ``feed(key, seq, text)`` appends a piece to field ``key`` and returns the rules that matched
    for the first time (each rule reports once; after that it is not run again). Work per piece
    is bounded: each rule searches at most ``lookback + SLICE_CHARS`` characters per slice.
    """

    def __init__(self, rules: dict[int, Matcher], budget_s: float = RULE_BUDGET_S) -> None:
        self.rules = rules
        self.budget_s = budget_s
        # The tail also keeps some context to show before a match; searches use only lookback.
        self.keep = max((m.lookback for m in rules.values()), default=0) + CONTEXT_CHARS
        self.tails: dict[str, _Tail] = {}
        self.found: set[int] = set()
        self.suspended: set[int] = set()
        self.spent: dict[int, float] = dict.fromkeys(rules, 0.0)
        self.searches: dict[int, int] = dict.fromkeys(rules, 0)
        self.chars_searched = 0  # for tests and benchmarks: the bound on work is checkable
        self.active: list[int] = list(rules)  # rules still searched: neither found nor suspended

    def _suspend(self, rule_id: int, took: float) -> None:
        self.suspended.add(rule_id)
        self.active = [r for r in self.active if r != rule_id]
        log.warning("moderation rule %s is suspended for this run: last search %.3f s, %d searches %.3f s in all",
                    rule_id, took, self.searches[rule_id], self.spent[rule_id])

    def feed(self, key: str, seq: int | None, text: str, final: bool = False) -> list[tuple[int, Match]]:
        if not text or not self.active:
            return []
        tail = self.tails.setdefault(key, _Tail())
        hits: list[tuple[int, Match]] = []
        for start in range(0, len(text), SLICE_CHARS):
            piece = text[start : start + SLICE_CHARS]
            last = start + SLICE_CHARS >= len(text)
            tail.pieces.append((tail.offset + len(tail.text), seq))
            hits.extend(self._search(key, tail, piece, final and last))
            self._advance(tail, piece)
        return hits

    def finish(self) -> list[tuple[int, Match]]:
        """The stream ended: matches held back at the end of a field are now certain."""
        hits: list[tuple[int, Match]] = []
        for key, tail in self.tails.items():
            if self.active:
                hits.extend(self._search(key, tail, "", final=True))
        return hits

    def _search(self, key: str, tail: _Tail, piece: str, final: bool) -> list[tuple[int, Match]]:
        hits = []
        full = tail.text + piece
        for rule_id in list(self.active):
            matcher = self.rules[rule_id]
            context = min(matcher.lookback, len(tail.text))
            skip = len(tail.text) - context  # where this rule's window starts in `full`
            window = full[skip:]
            window_offset = tail.offset + skip
            truncated = window_offset > 0
            self.chars_searched += len(window)
            began = time.perf_counter()
            # From 1 when earlier text was cut off: the first character is only context for
            # lookbehinds; a match starting there was already judged with fuller context.
            match = matcher.pattern.search(window, 1 if truncated else 0)
            took = time.perf_counter() - began
            spent = self.spent[rule_id] = self.spent[rule_id] + took
            searches = self.searches[rule_id] = self.searches[rule_id] + 1
            if (took > SLOW_SEARCH_S or spent > self.budget_s
                    or (searches >= MEAN_AFTER and spent / searches > SLOW_MEAN_S)):
                self._suspend(rule_id, took)
            if match is None:
                continue
            if matcher.hold_edge and not final and match.end() == len(window):
                continue  # "kill" at the very end may become "kills": decide with the next piece
            start, end = window_offset + match.start(), window_offset + match.end()
            self.found.add(rule_id)
            self.active = [r for r in self.active if r != rule_id]
            hits.append((rule_id, Match(
                key=key,
                seq=tail.seq_at(end - 1),
                start=start,
                end=end,
                text=match.group(0),
                before=full[max(0, skip + match.start() - CONTEXT_CHARS) : skip + match.start()],
                after=full[skip + match.end() : skip + match.end() + CONTEXT_CHARS],
            )))
        return hits

    def _advance(self, tail: _Tail, piece: str) -> None:
        text = tail.text + piece
        cut = max(0, len(text) - self.keep)
        tail.text = text[cut:]
        tail.offset += cut
        # Keep the piece covering the tail's first character, drop older ones.
        index = bisect.bisect_right(tail.pieces, tail.offset, key=lambda p: p[0]) - 1
        if index > 0:
            del tail.pieces[:index]


def find_all(matcher: Matcher, text: str, limit: int = 200) -> list[tuple[int, int, str]]:
    """Every match in a whole text (the admin's test box): ``(start, end, matched text)``."""
    spans = []
    for match in matcher.pattern.finditer(text):
        spans.append((match.start(), match.end(), match.group(0)))
        if len(spans) >= limit:
            break
    return spans
