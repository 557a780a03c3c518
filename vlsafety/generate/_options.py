"""Options of the generation agent (a light module: no torch, no Spark at import)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlsafety.generate._schema import ELITE_METHODS, MODALITY_STRATEGIES

__all__ = ["DEFAULT_METHOD_SCOPE", "GenerateOptions"]

#: Where each ELITE method applies (vlsb category or subcategory names). ELITE uses
#: blueprints only for indiscriminate weapons and fake news only for defamation (elite.txt
#: §3.3); flowchart and role play apply everywhere (a method absent here applies to all).
DEFAULT_METHOD_SCOPE: dict[str, list[str]] = {
    "blueprint": ["weapons", "violent_crime", "dangerous_activities"],
    "fake_news": ["misinformation"],
}


@dataclass(frozen=True)
class GenerateOptions:
    """How :func:`~vlsafety.generate.run_generate` builds candidates from the pool.

    Attributes:
        strategies: cross-modal strategies to apply to every pool sample with an image.
        methods: ELITE methods to apply (each within its ``method_scope``).
        method_scope: method → vlsb category/subcategory names it applies to; the
            mapping replaces :data:`DEFAULT_METHOD_SCOPE` as a whole, and a method absent
            from it applies to every sample.
        include_original: keep each pool sample with a text as an ``original`` candidate.
        questions_per_strategy: questions asked per sample and strategy.
        render_size: [width, height] of rendered ELITE images.
        seed: run seed; per-row seeds derive from it and the row identity.
        parse_retries: how often an unparsable model answer is asked again.
        max_new_tokens / temperature: generation settings (None: the model spec's).
        key_phrase_words: longest key phrase taken from a prompt text, in words.
        samples_per_partition: pool samples per Spark task.
    """

    strategies: list[str] = field(default_factory=lambda: list(MODALITY_STRATEGIES))
    methods: list[str] = field(default_factory=lambda: list(ELITE_METHODS))
    method_scope: dict[str, list[str]] = field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_METHOD_SCOPE.items()}
    )
    include_original: bool = True
    questions_per_strategy: int = 1
    render_size: list[int] = field(default_factory=lambda: [512, 512])
    seed: int = 0
    parse_retries: int = 2
    max_new_tokens: int | None = 512
    temperature: float | None = None
    key_phrase_words: int = 8
    samples_per_partition: int = 64

    def __post_init__(self) -> None:
        for name, allowed in (("strategies", MODALITY_STRATEGIES), ("methods", ELITE_METHODS)):
            values = getattr(self, name)
            bad = [v for v in values if v not in allowed]
            if bad:
                raise ValueError(f"generate.{name}: unknown {bad} (known: {', '.join(allowed)})")
            if len(set(values)) != len(values):
                raise ValueError(f"generate.{name}: listed twice in {values}")
        for method, scope in self.method_scope.items():
            if method not in ELITE_METHODS:
                raise ValueError(f"generate.method_scope: unknown method {method!r}")
            if not scope or not all(isinstance(s, str) and s for s in scope):
                raise ValueError(f"generate.method_scope.{method}: needs category names")
        if not (self.strategies or self.methods or self.include_original):
            raise ValueError("generate: nothing to do (no strategies, no methods, no originals)")
        if self.questions_per_strategy < 1:
            raise ValueError(
                f"generate.questions_per_strategy: must be >= 1, got {self.questions_per_strategy}"
            )
        if len(self.render_size) != 2 or not all(64 <= v <= 4096 for v in self.render_size):
            raise ValueError(
                f"generate.render_size: need [width, height] in 64..4096, got {self.render_size}"
            )
        if self.parse_retries < 0:
            raise ValueError(f"generate.parse_retries: must be >= 0, got {self.parse_retries}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ValueError(f"generate.max_new_tokens: must be >= 1, got {self.max_new_tokens}")
        if self.temperature is not None and self.temperature < 0:
            raise ValueError(f"generate.temperature: must be >= 0, got {self.temperature}")
        if self.key_phrase_words < 1:
            raise ValueError(
                f"generate.key_phrase_words: must be >= 1, got {self.key_phrase_words}"
            )
        if self.samples_per_partition < 1:
            raise ValueError(
                f"generate.samples_per_partition: must be >= 1, got {self.samples_per_partition}"
            )

    def method_applies(self, method: str, category: str | None, subcategory: str | None) -> bool:
        """Whether ``method`` applies to a sample of this category/subcategory."""
        scope = self.method_scope.get(method)
        if scope is None:
            return True
        return (category is not None and category in scope) or (
            subcategory is not None and subcategory in scope
        )
