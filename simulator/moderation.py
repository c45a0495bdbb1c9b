"""An OpenAI-shaped moderation result from a small built-in word list (pure, deterministic).

Good enough to drive a review feature in tests: an input is flagged when it contains a listed
word; the categories and scores say which list it came from.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from simulator.errors import invalid

MODEL = "omni-moderation-latest"
CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
# word → categories it flags. Deliberately small and obvious: this is a test double.
WORDS: dict[str, tuple[str, ...]] = {
    "idiot": ("harassment",),
    "stupid": ("harassment",),
    "threaten": ("harassment", "harassment/threatening"),
    "hate": ("hate",),
    "kill": ("violence",),
    "murder": ("violence",),
    "gore": ("violence", "violence/graphic"),
    "bomb": ("illicit", "illicit/violent", "violence"),
    "weapon": ("illicit", "illicit/violent"),
    "steal": ("illicit",),
    "shoplift": ("illicit",),
    "suicide": ("self-harm", "self-harm/intent"),
    "explicit": ("sexual",),
}
WORD_RE = re.compile(r"[a-z]+")


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        texts = []
        for item in value:
            if isinstance(item, str):
                texts.append(item)
            elif (
                isinstance(item, Mapping)
                and item.get("type") == "text"
                and isinstance(item.get("text"), str)
            ):
                texts.append(item["text"])
        if texts or not value:
            return texts or [""]
    raise invalid(
        "Invalid type for 'input': expected a string or an array of strings.",
        "input",
        "invalid_type",
    )


def _background_score(text: str, category: str) -> float:
    digest = hashlib.sha256(f"{category}:{text}".encode()).digest()
    return round(int.from_bytes(digest[:4], "big") / 2**32 * 0.02, 6)


def moderate_text(text: str) -> dict[str, Any]:
    hits: dict[str, int] = {}
    for word in WORD_RE.findall(text.lower()):
        for stem, categories in WORDS.items():
            if word.startswith(stem):
                for category in categories:
                    hits[category] = hits.get(category, 0) + 1
    categories = {category: category in hits for category in CATEGORIES}
    scores = {
        category: round(min(0.999, 0.85 + 0.05 * hits[category]), 6)
        if category in hits
        else _background_score(text, category)
        for category in CATEGORIES
    }
    applied = {category: ["text"] for category in CATEGORIES}
    return {
        "flagged": bool(hits),
        "categories": categories,
        "category_scores": scores,
        "category_applied_input_types": applied,
    }


def moderate(body: Any, request_id: str) -> dict[str, Any]:
    """The body of ``POST /moderations``."""
    if not isinstance(body, Mapping) or "input" not in body:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    model = body.get("model") or MODEL
    return {
        "id": "modr-" + request_id,
        "model": model if isinstance(model, str) else MODEL,
        "results": [moderate_text(text) for text in _texts(body["input"])],
    }
