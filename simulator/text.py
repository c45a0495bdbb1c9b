"""Deterministic prose that reads like English and answers the prompt a little; token splitting.

A token here is a word with its leading whitespace, or one punctuation mark (" capital", ".",
"\\n\\n"), which is close to what real models stream. Everything is driven by a seeded
``random.Random``, so the same seed writes the same words.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Iterator

TOKEN_RE = re.compile(r"\s*(?:\w+|[^\w\s])|\s+")
WORD_RE = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")

STOPWORDS = frozenset(
    """about above after again against also because been before being below between both but
    could does doing down during each from further have having here into itself just more most
    once only other over same should some such than that their theirs them then there these they
    this those through under until very what when where which while whom will with would your
    yours please explain tell write give make show want need like know think""".split()  # noqa: SIM905
)

FALLBACK_TOPICS = ("streaming", "latency", "the answer", "this question", "the request")
SUBJECTS = (
    "the stream",
    "each event",
    "the simulator",
    "a careful reader",
    "the client",
    "the server",
    "every token",
    "the dashboard",
    "a good test",
    "the first byte",
    "the final event",
    "a short pause",
    "the model",
    "this answer",
    "the sequence number",
    "a background task",
)
VERBS = (
    "carries",
    "shapes",
    "explains",
    "reveals",
    "follows",
    "tracks",
    "describes",
    "measures",
    "changes",
    "supports",
    "frames",
    "connects",
    "records",
    "delivers",
    "reflects",
    "checks",
)
OBJECTS = (
    "the whole picture",
    "a steady rhythm",
    "the order of events",
    "what happens next",
    "the details that matter",
    "a simple idea",
    "the final result",
    "the gaps in between",
    "a clear boundary",
    "each small step",
    "the time it takes",
    "the shape of the output",
    "a useful signal",
    "the trade-offs involved",
    "the meaning of the question",
)
ADVERBIALS = (
    "one piece at a time",
    "without waiting for the end",
    "in a predictable order",
    "as soon as it can",
    "with very little ceremony",
    "from start to finish",
    "under real conditions",
    "in plain sight",
    "more often than not",
    "at a comfortable pace",
)
CONNECTORS = (
    "In short,",
    "For example,",
    "In practice,",
    "Meanwhile,",
    "As a result,",
    "That said,",
    "Put simply,",
    "Of course,",
    "On the other hand,",
    "Most of the time,",
    "Seen this way,",
)
ADJECTIVES = (
    "simple",
    "subtle",
    "useful",
    "surprisingly deep",
    "easy to test",
    "worth a closer look",
    "mostly predictable",
    "a matter of timing",
    "clearer than it seems",
    "full of small details",
)
TEMPLATES = (
    "{Connector} {subject} {verb} {object} {adverbial}.",
    "{Subject} {verb} {object}, and {subject2} {verb2} {object2}.",
    "When it comes to {topic}, {subject} {verb} {object}.",
    "{Topic} is {adjective}, {adverbial}.",
    "It is worth noting that {subject} {verb} {object}.",
    "Why does {topic} matter? Because {subject} {verb} {object}.",
    "{Subject} {verb} {object} {adverbial}.",
    "{Connector} {topic} {verb} {object}.",
)
OBFUSCATION_ALPHABET = string.ascii_letters + string.digits


def tokenize(text: str) -> list[str]:
    """Split text into streamable tokens; ``"".join(tokenize(t)) == t`` always holds."""
    return TOKEN_RE.findall(text)


def excerpt(text: str, words: int = 12) -> str:
    """The first few words of a prompt, whitespace collapsed, for quoting it back."""
    parts = text.split()
    if not parts:
        return ""
    short = " ".join(parts[:words])
    return short + ("…" if len(parts) > words else "")


def topics_of(text: str, limit: int = 6) -> list[str]:
    """Content words of the prompt, most distinctive (longest) first."""
    seen: dict[str, str] = {}
    for word in WORD_RE.findall(text):
        word = word.strip("'-")
        lower = word.lower()
        if lower not in STOPWORDS and len(lower) > 3:
            # Keep "OpenAI" as written, but "Explain" at a sentence start becomes "explain".
            seen.setdefault(lower, word if word[1:] != word[1:].lower() else lower)
    return sorted(seen.values(), key=lambda w: (-len(w), w.lower()))[:limit]


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def random_letters(rng: random.Random, count: int) -> str:
    """``count`` times ``rng.choice(OBFUSCATION_ALPHABET)``, the same letters from the same state,
    at a third of the cost (what ``choice`` does inside: 6 random bits, redrawn when >= 62).
    Every response makes 512 of them."""
    bits = rng.getrandbits
    letters = []
    while len(letters) < count:
        drawn = bits(6)
        if drawn < 62:
            letters.append(OBFUSCATION_ALPHABET[drawn])
    return "".join(letters)


class Writer:
    """Writes prose for one response. ``prompt`` steers the topics and the opening quote."""

    def __init__(self, rng: random.Random, prompt: str = "") -> None:
        self.rng = rng
        self.prompt = prompt
        self.topics = topics_of(prompt) or list(FALLBACK_TOPICS)
        # What obfuscation() cuts its padding from (letters and digits only: JSON quotes them as they are).
        self.obfuscation_pool = random_letters(rng, 512)

    def topic(self) -> str:
        return self.rng.choice(self.topics)

    def opening(self) -> str:
        quoted = excerpt(self.prompt)
        if not quoted:
            return "Here is a simulated answer."
        return self.rng.choice(
            (
                f'You asked: "{quoted}".',
                f'Here is a simulated answer to "{quoted}".',
                f'About "{quoted}":',
            )
        )

    def sentence(self) -> str:
        choice = self.rng.choice
        subject = choice(SUBJECTS)
        topic = self.topic()
        return choice(TEMPLATES).format(
            Connector=choice(CONNECTORS),
            subject=subject,
            Subject=_cap(subject),
            verb=choice(VERBS),
            object=choice(OBJECTS),
            adverbial=choice(ADVERBIALS),
            subject2=choice(SUBJECTS),
            verb2=choice(VERBS),
            object2=choice(OBJECTS),
            topic=topic,
            Topic=_cap(topic),
            adjective=choice(ADJECTIVES),
        )

    def tokens(self, count: int, opening: bool = True) -> Iterator[str]:
        """Exactly ``count`` tokens of prose; the last one is a full stop when there is room."""
        if count <= 0:
            return
        produced = 0
        pending: list[str] = []
        if opening:
            pending = tokenize(self.opening())
        sentences_in_paragraph = 0
        first = True
        while True:
            if not pending:
                text = self.sentence()
                sentences_in_paragraph += 1
                if sentences_in_paragraph > self.rng.randint(3, 6):
                    text = "\n\n" + text
                    sentences_in_paragraph = 0
                else:
                    text = " " + text
                pending = tokenize(text)
            if first and pending:
                pending[0] = pending[0].lstrip()
                first = False
            for token in pending:
                produced += 1
                if produced == count:
                    yield token if count == 1 or token in ".?!" else "."
                    return
                yield token
            pending = []

    def text(self, count: int, opening: bool = True) -> str:
        return "".join(self.tokens(count, opening))

    def sentences(self, count: int) -> str:
        return " ".join(self.sentence() for _ in range(count))

    def obfuscation(self, delta_length: int) -> str:
        """Padding like the real API's: delta plus padding fill a multiple of 16 characters."""
        size = 16 - delta_length % 16
        # random() rather than randrange(): this runs once per token, 10^6 times in benchmarks.
        start = int(self.rng.random() * (len(self.obfuscation_pool) - 16))
        return self.obfuscation_pool[start : start + size]

    def logprob(self) -> float:
        return round(-self.rng.expovariate(6.0), 6)


def json_tokens(text: str) -> list[str]:
    """Split serialised JSON (arguments, diffs, code) into short pieces like a tokenizer would."""
    return re.findall(r'"[:,]"?|[{}\[\]]"?|[^"{}\[\]:,]{1,8}|[":,]', text)
