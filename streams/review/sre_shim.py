"""The one place Streamscope reads the standard library's private regex parser (``re._parser``
and ``re._constants``): a rule's regex is parsed to find its longest possible match (the look-back
across deltas) and to refuse shapes that backtrack catastrophically, before it ever runs on a
stream. The project runs on Python 3.11 only (pyproject.toml); ``tests/review/test_shims.py``
fails loudly if these names change. Why not google-re2: docs/decisions.md ("Moderation regexes").
"""

from re import _constants as sre_constants  # noqa: F401
from re import _parser as sre_parse  # noqa: F401

__all__ = ["sre_constants", "sre_parse"]
