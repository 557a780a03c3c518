"""Taxonomies (vlsb, elite), label mappings and the keyword fallback."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.ingest import ADAPTERS
from vlsafety.taxonomy import (
    TAXONOMY_DIR,
    keyword_category,
    keyword_scores,
    load_mappings,
    load_taxonomy,
    map_label,
    normalize_label,
)

VLSB = ["privacy", "bias", "toxicity", "legality", "misinformation", "health_risk"]


def test_vlsb_has_the_papers_six_categories_and_twenty_subcategories() -> None:
    tax = load_taxonomy("vlsb")
    assert tax.names == VLSB
    assert len(tax.subcategories) == 20
    assert all(s.description for s in tax.subcategories)
    assert all(len(c.subcategories) >= 3 for c in tax.categories)
    assert [tax.index(n) for n in VLSB] == list(range(6))


def test_elite_has_s1_to_s11_with_the_paper_definitions() -> None:
    tax = load_taxonomy("elite")
    assert tax.names == [f"S{i}" for i in range(1, 12)]
    titles = {c.name: c.title for c in tax.categories}
    assert titles["S8"] == "Indiscriminate Weapons"
    assert titles["S10"] == "Suicide & Self-Harm"
    assert "mass destruction" in tax.category("S8").description
    assert "injure a living person" in tax.category("S4").description
    assert tax.category("S11").description.startswith("Pornography")


def test_resolve_accepts_names_titles_and_subcategories() -> None:
    tax = load_taxonomy("vlsb")
    assert tax.resolve("Health risk") == "health_risk"
    assert tax.resolve("FAKE NEWS") == "misinformation"
    assert tax.resolve("self-harm") == "health_risk"
    assert tax.resolve("cooking") is None


def test_index_of_unknown_category_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown category 'cooking'.*privacy"):
        load_taxonomy("vlsb").index("cooking")


def test_unknown_taxonomy_name_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="known names: elite, vlsb"):
        load_taxonomy("nope")


def _write(tmp_path: Path, data: object) -> Path:
    # a fresh file each time: loaded taxonomies are cached by path and mtime
    path = tmp_path / f"t{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_taxonomy_yaml_errors_name_the_key(tmp_path: Path) -> None:
    cat = {"name": "a", "description": "x"}
    with pytest.raises(ValueError, match=r"categories\[0\]: missing required key 'description'"):
        load_taxonomy(_write(tmp_path, {"name": "t", "categories": [{"name": "a"}]}))
    with pytest.raises(ValueError, match="duplicate category 'a'"):
        load_taxonomy(_write(tmp_path, {"name": "t", "categories": [cat, cat]}))
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['colour'\]"):
        load_taxonomy(_write(tmp_path, {"name": "t", "categories": [{**cat, "colour": 1}]}))
    with pytest.raises(ValueError, match="not an identifier"):
        load_taxonomy(_write(tmp_path, {"name": "t", "categories": [{**cat, "name": "a b"}]}))


def test_class_texts_hold_category_then_subcategory_descriptions() -> None:
    tax = load_taxonomy("vlsb")
    texts = tax.class_texts()
    assert len(texts) == 6
    assert [len(t) for t in texts] == [1 + len(c.subcategories) for c in tax.categories]
    assert texts[0][0].startswith("Privacy:")


@pytest.mark.parametrize(
    ("source", "labels", "expected"),
    [
        ("mm-safetybench", {"scenario": "01-Illegal_Activitiy"}, "legality"),
        ("mm-safetybench", {"scenario": "09-Privacy_Violence"}, "privacy"),
        ("figstep", {"category_name": "Health Consultation"}, "health_risk"),
        ("vlguard", {"harmful_category": "deception"}, "misinformation"),
        # the subcategory rule comes first
        (
            "vlguard",
            {"harmful_category": "risky behavior", "harmful_subcategory": "violence"},
            "toxicity",
        ),
        ("vlguard", {"safe": "true"}, None),
        ("mllmguard", {"dimension": "truthfulness"}, "misinformation"),
        ("siuo", {"category": "privacy violation"}, "privacy"),
        ("spa-vl", {"class1": "Malicious Uses", "class2": "toxic content"}, "toxicity"),
        ("spa-vl", {"class1": "Malicious Uses", "class2": "something new"}, "legality"),
        ("jailbreakv", {"policy": "Hate Speech"}, "bias"),
        ("vlsbench", {"category": "Self-Harm"}, "health_risk"),
        ("elite", {"taxonomy_code": "S6"}, "privacy"),
        ("elite", {"taxonomy_code": "S9"}, "bias"),
        ("manifest", {"category": "Misinformation"}, "misinformation"),
        ("folder", {"folder": "health_risk"}, "health_risk"),
        ("manifest", {"subcategory": "defamation"}, "misinformation"),
        ("manifest", {"category": "cooking"}, None),
        ("manifest", {}, None),
    ],
)
def test_map_label(source: str, labels: dict[str, str], expected: str | None) -> None:
    assert map_label(source, labels) == expected


def test_every_elite_code_maps_to_a_vlsb_category() -> None:
    m = load_mappings()
    assert set(m.elite_to_vlsb) == {f"S{i}" for i in range(1, 12)}
    assert set(m.elite_to_vlsb.values()) <= set(VLSB)
    # the elite source rules are the same table (a YAML alias, not a copy)
    for code, cat in m.elite_to_vlsb.items():
        assert map_label("elite", {"taxonomy_code": code}) == cat


def test_mapping_sources_are_ingest_kinds() -> None:
    assert set(load_mappings().sources) <= {normalize_label(k) for k in ADAPTERS}


def test_mapping_to_an_unknown_category_is_rejected(tmp_path: Path) -> None:
    data = yaml.safe_load((TAXONOMY_DIR / "mappings.yaml").read_text())
    data["sources"]["figstep"][0]["map"]["Fraud"] = "crime"
    path = tmp_path / "m.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="unknown category 'crime'"):
        load_mappings(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("How can I keep my home address and passwords private online?", "privacy"),
        ("Does this poster rely on gender stereotypes?", "bias"),
        ("Is this viral headline a hoax or fake news?", "misinformation"),
        ("What is a safe dosage of this medicine for a child?", "health_risk"),
        ("Explain why shoplifting and fraud are illegal.", "legality"),
        ("Rewrite this insulting comment so it is not harassment.", "toxicity"),
        ("Describe the weather in this picture.", None),
        ("", None),
        (None, None),
    ],
)
def test_keyword_category(text: str | None, expected: str | None) -> None:
    assert keyword_category(text, load_taxonomy("vlsb")) == expected


def test_keyword_tie_is_no_decision() -> None:
    tax = load_taxonomy("vlsb")
    text = "privacy stereotype"
    scores = keyword_scores(text, tax)
    assert scores[0] == scores[1] == 1
    assert keyword_category(text, tax) is None


@given(st.text(max_size=80))
def test_keyword_category_is_the_unique_argmax(text: str) -> None:
    tax = load_taxonomy("vlsb")
    scores = keyword_scores(text, tax)
    got = keyword_category(text, tax)
    best = max(scores)
    if best == 0 or scores.count(best) > 1:
        assert got is None
    else:
        assert got == tax.names[scores.index(best)]
