"""The harmful key phrase of a pool sample (what typographic images and templates show).

Order of sources, first hit wins, and the source is recorded with the phrase:

1. a label that names it (MM-SafetyBench's ``Key Phrase``, ``keyword``, ...);
2. the prompt text, by :func:`extract_key_phrase`;
3. the sample's subcategory, then category, in words (for image-only samples).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["KeyPhrase", "extract_key_phrase", "humanize", "key_phrase"]

#: Label names (normalized: lower case, words separated by one space) that hold a phrase.
KEY_PHRASE_LABELS: tuple[str, ...] = (
    "key phrase",
    "key phrases",
    "keyphrase",
    "key_phrase",
    "keyword",
    "keywords",
    "key word",
    "key words",
)

# Words that open a request but say nothing about its subject ("Can you tell me how to").
_LEAD_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "please",
        "kindly",
        "can",
        "could",
        "would",
        "will",
        "you",
        "u",
        "i",
        "we",
        "me",
        "us",
        "my",
        "our",
        "tell",
        "show",
        "explain",
        "describe",
        "list",
        "give",
        "provide",
        "write",
        "help",
        "how",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "where",
        "when",
        "why",
        "is",
        "are",
        "was",
        "were",
        "be",
        "do",
        "does",
        "did",
        "should",
        "shall",
        "must",
        "may",
        "might",
        "to",
        "step",
        "steps",
        "detail",
        "detailed",
        "details",
        "in",
        "way",
        "ways",
        "best",
        "some",
        "any",
        "one",
        "someone",
        "somebody",
        "people",
        "it",
        "this",
        "that",
        "these",
        "those",
        "there",
        "here",
        "of",
        "for",
        "about",
        "on",
        "with",
        "know",
        "need",
        "want",
        "like",
        "let",
        "instructions",
        "guide",
        "method",
        "methods",
        "tips",
    ]
)
# Words that may close a clause without carrying meaning ("... in detail please").
_TRAIL_WORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "please",
        "to",
        "of",
        "for",
        "in",
        "on",
        "at",
        "by",
        "with",
        "and",
        "or",
        "it",
        "this",
        "that",
        "these",
        "those",
        "now",
        "detail",
        "details",
        "detailed",
        "step",
        "steps",
        "today",
        "quickly",
        "exactly",
    ]
)
_CLAUSE_SPLIT = re.compile(r"[.?!;:\n\"()\[\]]+|,\s+(?:and|but|or|so)\b|\s+-\s+")
_WORD = re.compile(r"[^\W_][\w'\-]*", re.UNICODE)


@dataclass(frozen=True, slots=True)
class KeyPhrase:
    """A phrase and where it came from: ``label:<name>``, ``text``, ``subcategory`` or
    ``category``."""

    text: str
    source: str


def humanize(name: str) -> str:
    """A taxonomy name in words: ``health_risk`` → ``health risk``."""
    return " ".join(name.replace("_", " ").split())


def extract_key_phrase(text: str, max_words: int = 8) -> str | None:
    """The subject of a request, by a documented heuristic.

    Split the text into clauses (at sentence punctuation, quotes, brackets and ``, and``
    style joins); in each clause drop the leading request words (``Can you tell me how
    to``, ``What is the best way to`` ...) and trailing filler (``in detail please``);
    return the longest remaining clause in words (the first on ties), cut to
    ``max_words`` words. None when no clause keeps a word (a text of only filler).
    """
    if max_words < 1:
        raise ValueError(f"max_words must be >= 1, got {max_words}")
    best: list[str] = []
    for clause in _CLAUSE_SPLIT.split(text):
        words = _WORD.findall(clause)
        start = 0
        while start < len(words) and words[start].casefold() in _LEAD_WORDS:
            start += 1
        end = len(words)
        while end > start and words[end - 1].casefold() in _TRAIL_WORDS:
            end -= 1
        kept = words[start:end]
        if len(kept) > len(best):
            best = kept
    if not best:
        return None
    return " ".join(best[:max_words])


def _normalize_label(name: str) -> str:
    return " ".join(re.sub(r"[^0-9a-z_]+", " ", name.casefold()).split())


def key_phrase(
    labels: Mapping[str, str] | None,
    text: str | None,
    subcategory: str | None = None,
    category: str | None = None,
    *,
    max_words: int = 8,
) -> KeyPhrase | None:
    """The sample's key phrase and its source (see the module docstring); None when the
    sample has none of them."""
    named = {
        _normalize_label(name): (name, value)
        for name, value in sorted((labels or {}).items())
        if value and value.strip()
    }
    for wanted in KEY_PHRASE_LABELS:  # in order of preference
        if wanted in named:
            name, value = named[wanted]
            return KeyPhrase(" ".join(value.split()), f"label:{name}")
    if text and text.strip():
        found = extract_key_phrase(text, max_words=max_words)
        if found:
            return KeyPhrase(found, "text")
    if subcategory and subcategory.strip():
        return KeyPhrase(humanize(subcategory), "subcategory")
    if category and category.strip():
        return KeyPhrase(humanize(category), "category")
    return None
