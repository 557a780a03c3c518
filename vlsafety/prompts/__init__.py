"""Our own prompt templates, shipped as text files next to this module.

Templates use ``string.Template`` placeholders (``$prompt``, ``$response``, ...), so braces
in user text or JSON examples need no escaping. A template's :attr:`PromptTemplate.version`
is its name plus a hash of its text: editing a prompt changes every cache key built on it,
so results judged under an old prompt are never mistaken for new ones.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from importlib import resources

__all__ = ["PromptTemplate", "load_prompt"]


@dataclass(frozen=True)
class PromptTemplate:
    """A named prompt template. ``render`` fails loudly on a missing or unknown placeholder."""

    name: str
    text: str

    @property
    def version(self) -> str:
        return f"{self.name}@{hashlib.sha256(self.text.encode()).hexdigest()[:12]}"

    @property
    def placeholders(self) -> frozenset[str]:
        names = set()
        for match in string.Template.pattern.finditer(self.text):
            name = match.group("named") or match.group("braced")
            if name:
                names.add(name)
        return frozenset(names)

    def render(self, **values: str) -> str:
        missing = self.placeholders - set(values)
        if missing:
            raise ValueError(f"prompt {self.name!r} needs {sorted(missing)}")
        unknown = set(values) - self.placeholders
        if unknown:
            raise ValueError(f"prompt {self.name!r} has no placeholder(s) {sorted(unknown)}")
        return string.Template(self.text).substitute(values)


def load_prompt(name: str) -> PromptTemplate:
    """Load ``vlsafety/prompts/<name>.txt``."""
    if not name.replace("_", "").isalnum():
        raise ValueError(f"bad prompt name {name!r}")
    try:
        text = resources.files(__name__).joinpath(f"{name}.txt").read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"no prompt template named {name!r}") from None
    return PromptTemplate(name, text)
