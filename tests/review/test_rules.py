"""The rules engine (streams/review/rules.py): validation, matches across delta boundaries, bounded work."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.review.rules import (
    CONTEXT_CHARS,
    REGEX_DEFAULT_LOOKBACK,
    SLICE_CHARS,
    RuleError,
    StreamMatcher,
    compile_rule,
    find_all,
)


def keywords(text, **options):
    return compile_rule("keywords", text, **options)


def regex(text, **options):
    return compile_rule("regex", text, **options)


def stream(matcher, pieces, final=True):
    """Feed pieces as deltas with seq = index; returns the first hit (or None)."""
    engine = StreamMatcher({1: matcher})
    hits = []
    for seq, piece in enumerate(pieces):
        hits.extend(engine.feed("f", seq, piece))
    if final:
        hits.extend(engine.finish())
    return hits[0][1] if hits else None


# --- matching across delta boundaries --------------------------------------------------------

def test_a_keyword_split_over_three_deltas_is_found_at_the_delta_that_completes_it():
    hit = stream(keywords("forbidden"), ["This is for", "bid", "den fruit."])
    assert (hit.text, hit.start, hit.end, hit.seq) == ("forbidden", 8, 17, 2)
    assert hit.before == "This is " and hit.after == " fruit."


@settings(max_examples=200, deadline=None)
@given(
    prefix=st.text(alphabet="ab cd,.", max_size=60),
    suffix=st.text(alphabet="ab cd,.", max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=150), max_size=12),
)
def test_any_chunking_finds_the_same_match(prefix, suffix, cuts):
    text = f"{prefix} secret plan {suffix}"
    points = sorted({c for c in cuts if 0 < c < len(text)})
    pieces = [text[a:b] for a, b in zip([0, *points], [*points, len(text)], strict=True)]
    hit = stream(keywords("secret plan"), pieces)
    start = text.index("secret plan")
    assert (hit.start, hit.end, hit.text) == (start, start + len("secret plan"), "secret plan")
    # The seq is the piece holding the match's last character.
    last_char = hit.end - 1
    bounds = [0, *points]
    assert hit.seq == max(i for i, b in enumerate(bounds) if b <= last_char)


def test_a_regex_split_across_deltas_is_found():
    hit = stream(regex(r"\d{3}-\d{4}"), ["call 55", "5-1", "2", "34 now"])
    assert (hit.text, hit.start, hit.seq) == ("555-1234", 5, 3)


def test_whole_words_do_not_match_inside_longer_words_even_when_split():
    assert stream(keywords("kill"), ["a s", "kill", " to learn"]) is None
    # "kill" at the end of a delta waits: the next delta makes it "kills", not a whole word.
    assert stream(keywords("kill"), ["they kill", "s time"]) is None
    assert stream(keywords("kill"), ["they kill", " time"]).text == "kill"
    # A long run of text before the word: the tail's first character is only context.
    assert stream(keywords("kill"), ["x" * 50 + "s", "k", "i", "l", "l", " "]) is None


def test_a_match_held_at_the_very_end_counts_once_the_stream_is_over():
    engine = StreamMatcher({1: keywords("kill")})
    assert engine.feed("f", 0, "they kill") == []
    ((rule_id, hit),) = engine.finish()
    assert (rule_id, hit.text, hit.seq) == (1, "kill", 0)


def test_case_sensitivity():
    assert stream(keywords("Secret"), ["a SECRET"]).text == "SECRET"
    assert stream(keywords("Secret", case_sensitive=True), ["a SECRET"]) is None
    assert stream(regex("ab+c", case_sensitive=True), ["ABBC"]) is None


def test_substring_keywords_when_whole_words_is_off():
    assert stream(keywords("kill", whole_words=False), ["a skill"]).text == "kill"


def test_each_rule_reports_once_and_fields_are_separate():
    engine = StreamMatcher({1: keywords("alpha"), 2: keywords("beta")})
    assert [r for r, _ in engine.feed("a", 0, "alpha and alpha ")] == [1]
    assert engine.feed("a", 1, "alpha again ") == []
    # "be" in one field and "ta" in another never make "beta".
    assert engine.feed("x", 2, "be") == [] and engine.feed("y", 3, "ta ") == []
    assert [r for r, _ in engine.feed("y", 4, " beta ")] == [2]


# --- bounded work -----------------------------------------------------------------------------

def test_work_per_delta_is_bounded_by_the_lookback():
    matcher = keywords("needle")
    engine = StreamMatcher({1: matcher})
    n = 20_000
    for seq in range(n):
        engine.feed("f", seq, "h")
        assert len(engine.tails["f"].text) <= matcher.lookback + CONTEXT_CHARS
        assert len(engine.tails["f"].pieces) <= matcher.lookback + CONTEXT_CHARS + 1
    # Each one-character delta is searched with at most `lookback` characters of earlier text.
    assert engine.chars_searched <= n * (matcher.lookback + 1)


def test_a_huge_delta_is_searched_in_slices():
    matcher = regex(r"x.*y")  # unbounded: lookback falls back to the default
    assert matcher.lookback == REGEX_DEFAULT_LOOKBACK
    engine = StreamMatcher({1: matcher})
    searched = []
    original = matcher.pattern.search

    class Spy:
        def search(self, text, pos=0):
            searched.append(len(text))
            return original(text, pos)

    engine.rules[1] = type(matcher)(Spy(), matcher.lookback, matcher.hold_edge)
    engine.feed("f", 0, "a" * 100_000)
    assert max(searched) <= SLICE_CHARS + REGEX_DEFAULT_LOOKBACK
    assert len(searched) == -(-100_000 // SLICE_CHARS)


def test_a_rule_over_its_time_budget_is_suspended_for_the_run():
    engine = StreamMatcher({1: keywords("zebra")}, budget_s=0.0)
    engine.feed("f", 0, "hello")
    assert engine.suspended == {1}
    before = engine.chars_searched
    assert engine.feed("f", 1, " zebra ") == []
    assert engine.chars_searched == before  # not run again


# --- validation -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("sec(ret", "not a valid regular expression: missing ), unterminated subpattern at position 3"),
        ("(a+)+b", "exponential time"),
        (r"^(\w+\s?)+$", "exponential time"),
        ("(a|ab)+c", "exponential time"),
        (r"(a)\1", "Backreferences"),
        ("x*", "can match empty text"),
        ("", "Enter a regular expression"),
    ],
)
def test_bad_regexes_are_refused_with_a_clear_message(pattern, message):
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")):
        regex(pattern)


@pytest.mark.parametrize("pattern", [r"\d{3}-\d{4}", "(foo|bar)+baz", r"(?>a+)+b", r"(a++)+b", r"\bpass(word)?\b",
                                     r"sk-[A-Za-z0-9]{20,}"])
def test_safe_regexes_are_accepted(pattern):
    regex(pattern)


def test_keyword_lists_are_validated():
    with pytest.raises(RuleError, match="at least one keyword"):
        keywords("  \n \n")
    with pytest.raises(RuleError, match="Too many keywords"):
        keywords("\n".join(f"w{i}" for i in range(501)))
    matcher = keywords("a.b\n(c)")  # keywords are literal text, never regex syntax
    assert [m[2] for m in find_all(matcher, "a.b axb (c) c")] == ["a.b", "(c)"]


def test_bounded_regexes_keep_exactly_what_they_need():
    assert regex(r"\d{3}-\d{4}").lookback == 9
    assert keywords("abc\nlonger one").lookback == len("longer one") + 1
