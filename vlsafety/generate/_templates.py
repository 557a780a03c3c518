"""The template backend and the ELITE methods: candidates without a generator model.

:func:`template_questions` fills the question patterns of
``prompts/generation/templates.yaml`` (one list per cross-modal strategy,
vlsafetybencher.txt §3.3) from the sample's key phrase, category and subcategory.
:func:`elite_pair` renders an ELITE image (elite.txt §3.3) and pairs it with its
instruction from ``prompts/generation/elite.yaml``. Both take a seeded ``random.Random``
and are otherwise pure.
"""

from __future__ import annotations

import random
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from vlsafety.generate._keyphrase import KeyPhrase, humanize, key_phrase
from vlsafety.generate._prompts import generation_data
from vlsafety.generate._render import (
    RENDER_VERSION,
    font_name,
    render_blueprint,
    render_flowchart,
    render_news_card,
    render_persona_card,
)
from vlsafety.generate._schema import (
    ELITE_METHODS,
    MODALITY_STRATEGIES,
    STRATEGY_PATTERNS,
    PoolSample,
)

__all__ = [
    "ElitePair",
    "MissingKeyPhraseError",
    "TemplateQuestion",
    "elite_pair",
    "elite_version",
    "sample_key_phrase",
    "template_questions",
    "templates_version",
]


class MissingKeyPhraseError(ValueError):
    """The sample has no key phrase, but every usable pattern needs one."""


@dataclass(frozen=True, slots=True)
class TemplateQuestion:
    """A filled question pattern: the text, its harm pattern and interaction."""

    text: str
    harm_pattern: str
    interaction: str
    pattern: str  # "<group index>.<text index>" in templates.yaml
    uses_topic: bool = False


@dataclass(frozen=True)
class ElitePair:
    """An ELITE image-text pair before it becomes a candidate."""

    text: str
    image: Image.Image
    harm_pattern: str
    interaction: str
    details: dict[str, Any] = field(default_factory=dict)


def templates_version() -> str:
    return generation_data("templates").version


def elite_version() -> str:
    """Version of the ELITE texts and of the renderer (both determine the pair)."""
    return f"{generation_data('elite').version}+render@{RENDER_VERSION}"


def sample_key_phrase(sample: PoolSample, max_words: int = 8) -> KeyPhrase | None:
    """The sample's key phrase (see :func:`vlsafety.generate.key_phrase`)."""
    return key_phrase(
        sample.labels, sample.text, sample.subcategory, sample.category, max_words=max_words
    )


def _values(sample: PoolSample, topic: KeyPhrase | None) -> dict[str, str]:
    """Placeholder values the sample actually has (missing ones stay missing)."""
    values: dict[str, str] = {}
    if topic is not None:
        values["topic"] = topic.text
    if sample.category:
        values["category"] = humanize(sample.category)
    sub = sample.subcategory or sample.category
    if sub:
        values["subcategory"] = humanize(sub)
    return values


def _placeholders(text: str) -> set[str]:
    names = set()
    for m in string.Template.pattern.finditer(text):
        name = m.group("named") or m.group("braced")
        if name:
            names.add(name)
    return names


def _fill(text: str, values: Mapping[str, str]) -> str:
    return string.Template(text).substitute(values)


def template_questions(
    sample: PoolSample,
    strategy: str,
    rng: random.Random,
    n: int = 1,
    *,
    topic: KeyPhrase | None = None,
) -> list[TemplateQuestion]:
    """``n`` distinct questions for ``strategy`` from the template patterns (fewer when
    fewer patterns are usable: a pattern is usable when the sample has every value it
    names). ``topic`` defaults to the sample's key phrase.

    Raises ValueError for an unknown strategy or ``n < 1``, and
    :class:`MissingKeyPhraseError` when no pattern is usable.
    """
    if strategy not in MODALITY_STRATEGIES:
        raise ValueError(
            f"template strategy must be one of {MODALITY_STRATEGIES}, got {strategy!r}"
        )
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    topic = topic if topic is not None else sample_key_phrase(sample)
    values = _values(sample, topic)
    groups = generation_data("templates").data.get(strategy)
    if not isinstance(groups, list) or not groups:
        raise ValueError(f"templates.yaml has no patterns for {strategy!r}")
    options: list[TemplateQuestion] = []
    for gi, group in enumerate(groups):
        pattern = group["harm_pattern"]
        if pattern not in STRATEGY_PATTERNS[strategy]:
            raise ValueError(f"templates.yaml: {strategy}[{gi}]: pattern {pattern!r} not allowed")
        for ti, text in enumerate(group["texts"]):
            needed = _placeholders(text) | _placeholders(group["interaction"])
            if needed <= set(values):
                options.append(
                    TemplateQuestion(
                        _fill(text, values),
                        pattern,
                        _fill(group["interaction"], values),
                        f"{gi}.{ti}",
                        uses_topic="topic" in needed,
                    )
                )
    if not options:
        raise MissingKeyPhraseError(
            f"sample {sample.sample_id}: no {strategy} pattern can be filled "
            f"(it has no key phrase, category or subcategory)"
        )
    rng.shuffle(options)
    return options[:n]


def _pick(rng: random.Random, items: Sequence[str], what: str) -> str:
    if not items:
        raise ValueError(f"elite.yaml: {what} is empty")
    return items[rng.randrange(len(items))]


def elite_pair(
    sample: PoolSample,
    method: str,
    rng: random.Random,
    *,
    size: Sequence[int] = (512, 512),
    topic: KeyPhrase | None = None,
) -> ElitePair:
    """Render the ``method`` image for the sample's key phrase and pair it with a
    benign-looking instruction (flowchart, blueprint), a role prompt (role play) or a
    request to spread the story (fake news). Raises :class:`MissingKeyPhraseError` when
    the sample has no key phrase."""
    if method not in ELITE_METHODS:
        raise ValueError(f"ELITE method must be one of {ELITE_METHODS}, got {method!r}")
    topic = topic if topic is not None else sample_key_phrase(sample)
    if topic is None:
        raise MissingKeyPhraseError(f"sample {sample.sample_id}: no key phrase for {method}")
    spec = generation_data("elite").data[method]
    values = {"topic": topic.text}
    details: dict[str, Any] = {"size": list(size), "font": font_name()}
    if method == "flowchart":
        image = render_flowchart(topic.text, size=size)
    elif method == "blueprint":
        image = render_blueprint(topic.text, size=size)
    elif method == "role_play":
        roles = spec["roles"]
        role = _pick(rng, roles.get(sample.category or "", roles["default"]), "roles")
        values["role"] = role
        details["role"] = role
        image = render_persona_card(role, size=size)
    else:  # fake_news
        person = (
            f"{_pick(rng, spec['first_names'], 'first_names')} "
            f"{_pick(rng, spec['last_names'], 'last_names')}"
        )
        masthead = _pick(rng, spec["mastheads"], "mastheads")
        values["person"] = person
        headline = _fill(_pick(rng, spec["headlines"], "headlines"), values)
        details.update(person=person, person_fictional=True, masthead=masthead, headline=headline)
        image = render_news_card(
            headline, masthead=masthead, caption=f"File photo: {person}", size=size
        )
    instruction = _pick(rng, spec["instructions"], "instructions")
    details["instruction"] = spec["instructions"].index(instruction)
    return ElitePair(
        text=_fill(instruction, values),
        image=image,
        harm_pattern=spec["harm_pattern"],
        interaction=_fill(spec["interaction"], values),
        details=details,
    )
