"""Safety taxonomies (YAML trees in ``conf/taxonomies/``) and source-label mapping.

* ``vlsb`` — VLSafetyBencher's two-layer tree (vlsafetybencher.txt §3.2): 6 categories
  (privacy, bias, toxicity, legality, misinformation, health risk), 20 subcategories.
* ``elite`` — ELITE's hazard taxonomy S1–S11 (elite.txt §3.2, definitions in App. B.1).

``mappings.yaml`` maps ELITE codes and each source benchmark's original labels onto the
vlsb categories; :func:`map_label` applies it. :func:`keyword_category` is the rule-based
fallback used when no trusted model is available: it places a prompt by the words of the
taxonomy's own descriptions.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Category",
    "LabelMappings",
    "Subcategory",
    "Taxonomy",
    "TAXONOMY_DIR",
    "keyword_category",
    "keyword_scores",
    "load_mappings",
    "elite_code",
    "load_taxonomy",
    "map_label",
    "normalize_label",
    "source_category",
    "unmapped_labels",
]

#: Where the shipped taxonomies live (the repository's ``conf/taxonomies``).
TAXONOMY_DIR = Path(__file__).resolve().parent.parent / "conf" / "taxonomies"

_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def normalize_label(value: str) -> str:
    """Case-fold, NFKC, and turn each run of non-alphanumerics into one space."""
    text = unicodedata.normalize("NFKC", str(value)).casefold()
    return " ".join(re.sub(r"[^0-9a-z]+", " ", text).split())


@dataclass(frozen=True)
class Subcategory:
    """A leaf of the taxonomy tree."""

    name: str
    title: str
    description: str
    category: str


@dataclass(frozen=True)
class Category:
    """A top-level category with its description, keywords and subcategories."""

    name: str
    title: str
    description: str
    keywords: tuple[str, ...] = ()
    subcategories: tuple[Subcategory, ...] = ()


@dataclass(frozen=True)
class Taxonomy:
    """A category tree. Category order is the YAML order and defines :meth:`index`."""

    name: str
    description: str
    categories: tuple[Category, ...]
    _by_name: dict[str, int] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.categories:
            raise ValueError(f"taxonomy {self.name!r} has no categories")
        seen: dict[str, int] = {}
        for i, cat in enumerate(self.categories):
            if cat.name in seen:
                raise ValueError(f"taxonomy {self.name!r}: duplicate category {cat.name!r}")
            seen[cat.name] = i
        for cat in self.categories:
            for sub in cat.subcategories:
                if sub.name in seen:
                    raise ValueError(f"taxonomy {self.name!r}: name {sub.name!r} is used twice")
                seen[sub.name] = -1
        self._by_name.update({c.name: i for i, c in enumerate(self.categories)})

    @property
    def names(self) -> list[str]:
        """Category names in index order."""
        return [c.name for c in self.categories]

    @property
    def subcategories(self) -> list[Subcategory]:
        """All subcategories, in tree order."""
        return [s for c in self.categories for s in c.subcategories]

    @property
    def descriptions(self) -> dict[str, str]:
        """Category name → description."""
        return {c.name: c.description for c in self.categories}

    def __len__(self) -> int:
        return len(self.categories)

    def index(self, name: str) -> int:
        """Index of category ``name`` (ValueError naming the known categories otherwise)."""
        try:
            return self._by_name[name]
        except KeyError:
            raise ValueError(
                f"unknown category {name!r} in taxonomy {self.name!r}; "
                f"known: {', '.join(self.names)}"
            ) from None

    def category(self, name: str) -> Category:
        return self.categories[self.index(name)]

    def resolve(self, value: str) -> str | None:
        """The category named by ``value`` — a category or subcategory name or title,
        compared after :func:`normalize_label` — or None."""
        return self._lookup().get(normalize_label(value))

    @functools.cache  # noqa: B019 - taxonomies are immutable and few
    def _lookup(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for c in self.categories:
            table[normalize_label(c.name)] = c.name
            table[normalize_label(c.title)] = c.name
            for s in c.subcategories:
                table[normalize_label(s.name)] = c.name
                table[normalize_label(s.title)] = c.name
        return table

    def class_texts(self) -> list[list[str]]:
        """Per category, the texts whose embeddings form its CLIP zero-shot class vector:
        the category description and each subcategory description (prompt ensembling)."""
        return [
            [f"{c.title}: {c.description}"]
            + [f"{c.title}, {s.title}: {s.description}" for s in c.subcategories]
            for c in self.categories
        ]


def _require(mapping: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in mapping or mapping[key] in (None, ""):
        raise ValueError(f"{where}: missing required key {key!r}")
    return mapping[key]


def _str(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{where}: expected a string, got {type(value).__name__}")
    return " ".join(value.split())


def _parse_taxonomy(data: Any, origin: str) -> Taxonomy:
    if not isinstance(data, Mapping):
        raise ValueError(f"{origin}: top level must be a mapping")
    unknown = set(data) - {"name", "description", "categories"}
    if unknown:
        raise ValueError(f"{origin}: unknown key(s) {sorted(unknown)}")
    name = _str(_require(data, "name", origin), f"{origin}: name")
    raw_cats = _require(data, "categories", origin)
    if not isinstance(raw_cats, list):
        raise ValueError(f"{origin}: categories must be a list")
    cats = []
    for i, rc in enumerate(raw_cats):
        where = f"{origin}: categories[{i}]"
        if not isinstance(rc, Mapping):
            raise ValueError(f"{where}: must be a mapping")
        unknown = set(rc) - {"name", "title", "description", "keywords", "subcategories"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        cname = _str(_require(rc, "name", where), f"{where}.name")
        if not _NAME.match(cname):
            raise ValueError(f"{where}.name: {cname!r} is not an identifier")
        subs = []
        for j, rs in enumerate(rc.get("subcategories") or []):
            swhere = f"{where}.subcategories[{j}]"
            if not isinstance(rs, Mapping):
                raise ValueError(f"{swhere}: must be a mapping")
            unknown = set(rs) - {"name", "title", "description"}
            if unknown:
                raise ValueError(f"{swhere}: unknown key(s) {sorted(unknown)}")
            sname = _str(_require(rs, "name", swhere), f"{swhere}.name")
            if not _NAME.match(sname):
                raise ValueError(f"{swhere}.name: {sname!r} is not an identifier")
            subs.append(
                Subcategory(
                    name=sname,
                    title=_str(rs.get("title") or sname, f"{swhere}.title"),
                    description=_str(_require(rs, "description", swhere), swhere),
                    category=cname,
                )
            )
        keywords = rc.get("keywords") or []
        if not isinstance(keywords, list):
            raise ValueError(f"{where}.keywords: must be a list")
        cats.append(
            Category(
                name=cname,
                title=_str(rc.get("title") or cname, f"{where}.title"),
                description=_str(_require(rc, "description", where), f"{where}.description"),
                keywords=tuple(_str(k, f"{where}.keywords").lower() for k in keywords),
                subcategories=tuple(subs),
            )
        )
    return Taxonomy(
        name=name,
        description=_str(data.get("description") or "", f"{origin}: description"),
        categories=tuple(cats),
    )


def _taxonomy_path(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or "/" in text:
        return Path(name_or_path)
    return TAXONOMY_DIR / f"{text}.yaml"


@functools.lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> Taxonomy:
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    return _parse_taxonomy(data, path)


def load_taxonomy(name_or_path: str | Path | Taxonomy = "vlsb") -> Taxonomy:
    """Load a taxonomy by name (``"vlsb"``, ``"elite"``) or from a YAML path."""
    if isinstance(name_or_path, Taxonomy):
        return name_or_path
    path = _taxonomy_path(name_or_path)
    if not path.is_file():
        known = sorted(p.stem for p in TAXONOMY_DIR.glob("*.yaml") if p.stem != "mappings")
        raise ValueError(
            f"taxonomy {str(name_or_path)!r} not found ({path}); known names: {', '.join(known)}"
        )
    return _load_cached(str(path.resolve()), path.stat().st_mtime_ns)


# ---------------------------------------------------------------------------- mappings


@dataclass(frozen=True)
class _Rule:
    label: str
    values: Mapping[str, str | None] | None  # None: value must name a taxonomy class


@dataclass(frozen=True)
class LabelMappings:
    """Parsed ``mappings.yaml``: ELITE code → vlsb category, and per-source label rules."""

    target: str
    elite_to_vlsb: Mapping[str, str]
    sources: Mapping[str, tuple[_Rule, ...]]
    default: tuple[_Rule, ...]

    def rules(self, source: str) -> tuple[_Rule, ...]:
        return self.sources.get(normalize_label(source), ()) + self.default


def _parse_rules(raw: Any, where: str, target: Taxonomy) -> tuple[_Rule, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"{where}: must be a list of rules")
    rules = []
    for i, r in enumerate(raw):
        rwhere = f"{where}[{i}]"
        if not isinstance(r, Mapping) or set(r) != {"label", "map"}:
            raise ValueError(f"{rwhere}: a rule is a mapping with exactly 'label' and 'map'")
        label = _str(r["label"], f"{rwhere}.label")
        if r["map"] == "taxonomy":
            rules.append(_Rule(label, None))
            continue
        if not isinstance(r["map"], Mapping):
            raise ValueError(f"{rwhere}.map: must be a mapping or 'taxonomy'")
        values: dict[str, str | None] = {}
        for k, v in r["map"].items():
            if v is not None:
                target.index(str(v))  # unknown category → ValueError naming it
            values[normalize_label(str(k))] = None if v is None else str(v)
        rules.append(_Rule(label, values))
    return tuple(rules)


@functools.lru_cache(maxsize=8)
def _load_mappings_cached(path: str, mtime_ns: int) -> LabelMappings:
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ValueError(f"{path}: top level must be a mapping")
    unknown = set(data) - {"target", "elite_to_vlsb", "sources", "default"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}")
    target = load_taxonomy(_str(_require(data, "target", path), f"{path}: target"))
    elite = load_taxonomy("elite")
    e2v = {str(k): str(v) for k, v in (data.get("elite_to_vlsb") or {}).items()}
    for code, cat in e2v.items():
        elite.index(code)
        target.index(cat)
    missing = set(elite.names) - set(e2v)
    if missing:
        raise ValueError(f"{path}: elite_to_vlsb lacks {sorted(missing)}")
    raw_sources = data.get("sources") or {}
    if not isinstance(raw_sources, Mapping):
        raise ValueError(f"{path}: sources must be a mapping")
    sources = {
        normalize_label(str(src)): _parse_rules(rules, f"{path}: sources.{src}", target)
        for src, rules in raw_sources.items()
    }
    default = _parse_rules(data.get("default") or [], f"{path}: default", target)
    return LabelMappings(target.name, e2v, sources, default)


def load_mappings(path: str | Path | None = None) -> LabelMappings:
    """Load ``mappings.yaml`` (the shipped one by default); every category is checked."""
    p = Path(path) if path is not None else TAXONOMY_DIR / "mappings.yaml"
    if not p.is_file():
        raise ValueError(f"label mappings file not found: {p}")
    return _load_mappings_cached(str(p.resolve()), p.stat().st_mtime_ns)


def map_label(
    source: str,
    labels: Mapping[str, str | None] | None,
    *,
    mappings: LabelMappings | None = None,
) -> str | None:
    """Map a sample's original ``labels`` from ``source`` (an ingest KIND such as
    ``"mm-safetybench"``) to a vlsb category, or None when no rule applies.

    The source's rules are tried in order, then the default rules (a ``category`` label
    that already names a vlsb class, an ELITE ``taxonomy_code``). A label whose value a
    rule maps to ``null`` (known, but no category) ends the search with None.
    """
    if not labels:
        return None
    m = mappings or load_mappings()
    target = load_taxonomy(m.target)
    by_key = {normalize_label(k): v for k, v in labels.items() if v not in (None, "")}
    for rule in m.rules(source):
        value = by_key.get(normalize_label(rule.label))
        if value is None:
            continue
        if rule.values is None:
            hit = target.resolve(str(value))
            if hit is not None:
                return hit
            continue
        key = normalize_label(str(value))
        if key in rule.values:
            return rule.values[key]
    return None


def source_category(
    source: str,
    labels: Mapping[str, str | None] | None,
    *,
    mappings: LabelMappings | None = None,
) -> str | None:
    """The sample's category in the source benchmark's own words: the value of the first
    label the source's mapping rules read (MM-SafetyBench ``scenario``, FigStep
    ``category_name``, MLLMGuard ``dimension``), else of a default rule's label
    (``category``, ``subcategory``, ``folder``, ``taxonomy_code``); None without one."""
    if not labels:
        return None
    m = mappings or load_mappings()
    by_key = {normalize_label(k): v for k, v in labels.items() if v not in (None, "")}
    for rule in m.rules(source):
        value = by_key.get(normalize_label(rule.label))
        if value is not None:
            return str(value)
    return None


def elite_code(
    labels: Mapping[str, str | None] | None, text: str | None, *, min_hits: int = 1
) -> str | None:
    """The sample's ELITE hazard code (S1–S11, elite.txt §3.2): the source's own
    ``taxonomy_code`` label when it names one, else :func:`keyword_category` over the
    prompt and the text rendered in the image (``image_text``); None when undecided."""
    elite = load_taxonomy("elite")
    by_key = {normalize_label(k): v for k, v in (labels or {}).items() if v not in (None, "")}
    code = by_key.get("taxonomy code")
    if code is not None and str(code).strip().upper() in elite.names:
        return str(code).strip().upper()
    probe = " ".join(x for x in (text, by_key.get("image text")) if x)
    return keyword_category(probe, elite, min_hits=min_hits)


def unmapped_labels(
    source: str,
    labels: Mapping[str, str | None] | None,
    *,
    mappings: LabelMappings | None = None,
) -> list[tuple[str, str]]:
    """The (label, value) pairs of ``labels`` that a mapping rule reads but whose value
    no rule maps — why :func:`map_label` found no category. Empty when it found one, or
    when the sample carries no label any rule reads (no source label at all)."""
    if not labels or map_label(source, labels, mappings=mappings) is not None:
        return []
    m = mappings or load_mappings()
    by_key = {normalize_label(k): (k, v) for k, v in labels.items() if v not in (None, "")}
    out: list[tuple[str, str]] = []
    for rule in m.rules(source):
        hit = by_key.get(normalize_label(rule.label))
        if hit is None:
            continue
        key = normalize_label(str(hit[1]))
        if rule.values is not None and key in rule.values:
            continue  # known label that maps to no category on purpose
        if rule.values is None and rule not in m.sources.get(normalize_label(source), ()):
            continue  # a generic default rule: a label that is not a category name is fine
        pair = (hit[0], str(hit[1]))
        if pair not in out:
            out.append(pair)
    return out


# ----------------------------------------------------------------------- keywords

_STOPWORD_TEXT = (
    "about above after again against also among another any are because been before being "
    "between both but can claim claims content contents could describe does doing down "
    "during each either else every from further given have having here image images "
    "information into its itself just like made make many more most much must need not only "
    "other others over people person photo picture real request requests same should show "
    "showing shows some someone such than that their them then there these they things this "
    "those through under until upon use used using very was well were what when where which "
    "while who whom whose will with within without would your yours "
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())

_WORD = re.compile(r"[a-z][a-z\-]+")


def _stem(word: str) -> str:
    # A 6-letter prefix is a crude but language-agnostic stem: it merges "privacy" and
    # "private", "discriminate" and "discrimination", "stereotype(s)".
    return word[:6]


def _words(text: str) -> list[str]:
    text = unicodedata.normalize("NFKC", text).casefold()
    return [w.strip("-") for w in _WORD.findall(text)]


@functools.cache
def _keyword_index(taxonomy: Taxonomy) -> tuple[dict[str, int], list[tuple[str, int]]]:
    """Stems (and multi-word phrases) that occur in exactly one category's vocabulary.

    A category's vocabulary is its explicit keywords plus the content words of its own and
    its subcategories' names and descriptions. Stems shared by several categories are
    dropped: they cannot discriminate, and counting them would turn ties into guesses.
    """
    owners: dict[str, set[int]] = {}
    phrases: list[tuple[str, int]] = []
    for i, c in enumerate(taxonomy.categories):
        text = " ".join(
            [c.name.replace("_", " "), c.title, c.description]
            + [f"{s.name.replace('_', ' ')} {s.title} {s.description}" for s in c.subcategories]
        )
        vocab = [w for w in _words(text) if len(w) >= 4 and w not in _STOPWORDS]
        for kw in c.keywords:
            if " " in kw:
                phrases.append((kw, i))
            else:
                vocab.append(kw)
        for w in vocab:
            owners.setdefault(_stem(w), set()).add(i)
    stems = {s: next(iter(o)) for s, o in owners.items() if len(o) == 1}
    phrase_owner: dict[str, set[int]] = {}
    for p, i in phrases:
        phrase_owner.setdefault(p, set()).add(i)
    unique_phrases = [(p, next(iter(o))) for p, o in phrase_owner.items() if len(o) == 1]
    return stems, unique_phrases


def keyword_scores(text: str | None, taxonomy: Taxonomy) -> list[int]:
    """Per category, how many words of ``text`` match that category's unique stems
    (each distinct stem counts once) plus its multi-word keyword phrases."""
    scores = [0] * len(taxonomy)
    if not text:
        return scores
    stems, phrases = _keyword_index(taxonomy)
    seen: set[str] = set()
    for w in _words(text):
        if len(w) < 4 or w in _STOPWORDS:
            continue
        s = _stem(w)
        if s in stems and s not in seen:
            seen.add(s)
            scores[stems[s]] += 1
    lowered = " ".join(_words(text))
    for phrase, i in phrases:
        if re.search(rf"\b{re.escape(phrase)}\b", lowered):
            scores[i] += 1
    return scores


def keyword_category(text: str | None, taxonomy: Taxonomy, *, min_hits: int = 1) -> str | None:
    """The category whose vocabulary ``text`` hits most, if that maximum is unique and at
    least ``min_hits``; else None (a tie is not a decision)."""
    scores = keyword_scores(text, taxonomy)
    best = max(scores)
    if best < min_hits or scores.count(best) != 1:
        return None
    return taxonomy.categories[scores.index(best)].name
