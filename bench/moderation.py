"""Live moderation benchmark: what checking rules costs per streamed event.

Feeds 200,000 text deltas (2-6 characters, like real tokens) through LiveModerator with keyword
rules (20 keywords each) and regex rules, none of which match (the worst case: every rule runs on
every delta), and reports CPU time per event and characters searched per event; then one huge
delta. Figures are printed; nothing is asserted.

    .venv/bin/python bench/moderation.py [--events 200000]
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")

import django  # noqa: E402

django.setup()

from streams.models import ModerationRule  # noqa: E402
from streams.review.moderation import LiveModerator  # noqa: E402

REGEXES = [r"sk-[A-Za-z0-9]{20,}", r"\b\d{3}-\d{2}-\d{4}\b", r"password\s*[:=]\s*\S+", r"(?:zq|xj)\w+tion",
           r"BEGIN [A-Z ]+PRIVATE KEY", r"\b[A-Z]{2}\d{2}[A-Z0-9]{10,30}\b", r"ignore (?:all|previous) instructions",
           r"\bkill(?:ed|ing)? (?:him|her|them)\b", r"https?://\S+\.onion\b", r"[\w.]+@evil\.example"]


def keyword_rules() -> list[ModerationRule]:
    return [ModerationRule(pk=n + 1, name=f"kw{n}", kind="keywords", scope="output_text",
                           patterns="\n".join(f"qqword{n}x{k}" for k in range(20))) for n in range(20)]


def regex_rules() -> list[ModerationRule]:
    return [ModerationRule(pk=100 + n, name=f"re{n}", kind="regex", patterns=pattern, scope="output_text")
            for n, pattern in enumerate(REGEXES)]


def measure(label: str, rules: list[ModerationRule], deltas: list[str]) -> None:
    moderator = LiveModerator(run_id=0)
    moderator.configure(rules)
    wall, cpu = time.perf_counter(), time.process_time()
    for seq, delta in enumerate(deltas):
        moderator.observe(seq, "response.output_text.delta", {"output_index": 0, "content_index": 0, "delta": delta})
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    matcher = moderator.matchers.get("output_text")
    searched = matcher.chars_searched if matcher else 0
    n = len(deltas)
    print(f"{label:34s} {n:,} deltas: CPU {cpu / n * 1e6:6.1f} µs/event (wall {wall / n * 1e6:6.1f}), "
          f"{searched / n:6,.0f} chars searched/event, suspended {len(matcher.suspended) if matcher else 0}, "
          f"flags {len(moderator.pending)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    rng = random.Random(1)
    words = "the stream carries each small step of what happens next under real conditions".split()
    deltas = [" " + rng.choice(words)[: rng.randint(1, 5)] for _ in range(args.events)]
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    measure("no rules", [], deltas)
    measure("1 keyword rule (20 keywords)", keyword_rules()[:1], deltas)
    measure("20 keyword rules", keyword_rules(), deltas)
    measure("10 regex rules", regex_rules(), deltas)
    measure("20 keyword + 10 regex rules", keyword_rules() + regex_rules(), deltas)

    moderator = LiveModerator(run_id=0)
    moderator.configure(keyword_rules() + regex_rules())
    huge = "".join(deltas)[:1_000_000]
    cpu = time.process_time()
    moderator.observe(0, "response.output_text.delta", {"output_index": 0, "delta": huge})
    cpu = time.process_time() - cpu
    print(f"one delta of {len(huge):,} chars, 30 rules: CPU {cpu * 1000:.0f} ms "
          f"({moderator.matchers['output_text'].chars_searched / len(huge):.2f} chars searched per char)")


if __name__ == "__main__":
    main()
