"""Pure pieces of the public-benchmark path: the multiple-choice rule, the source's own
category and ELITE code, the update's before → after table and its typed projection."""

from __future__ import annotations

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from vlsafety.pipeline import is_multiple_choice
from vlsafety.pipeline._update import _project, quality_table
from vlsafety.taxonomy import elite_code, source_category


@pytest.mark.parametrize(
    ("labels", "mcq"),
    [
        ({"Options": "A. jaune B. brun C. bleu", "dimension": "hallucination"}, True),
        ({"Answer": "A", "dimension": "noise-injection"}, True),
        ({"position": "reversed", "dimension": "position-swapping"}, True),
        ({"Options": "", "dimension": "bias"}, False),  # an empty cell is no option list
        ({"dimension": "bias", "Category I": "Bias"}, False),
        ({}, False),
    ],
)
def test_multiple_choice_by_the_items_own_labels(labels: dict[str, str], mcq: bool) -> None:
    assert is_multiple_choice(labels) is mcq


@given(st.dictionaries(st.sampled_from(["scenario", "dimension", "question", "style"]), st.text()))
def test_labels_without_an_answer_key_are_never_multiple_choice(labels: dict[str, str]) -> None:
    assert not is_multiple_choice(labels)


def test_source_category_is_the_first_label_the_sources_rules_read() -> None:
    assert source_category("figstep", {"category_name": "Hate Speech", "x": "y"}) == "Hate Speech"
    assert source_category("mm-safetybench", {"scenario": "01-Illegal_Activitiy"}) == (
        "01-Illegal_Activitiy"
    )
    # MLLMGuard: the dimension comes before Category I in its rules
    got = source_category("mllmguard", {"Category I": "Truthfulness", "dimension": "noise"})
    assert got == "noise"
    # a default rule's label, for a source without its own rules
    assert source_category("manifest", {"category": "privacy"}) == "privacy"
    assert source_category("figstep", {"question": "no category label"}) is None
    assert source_category("figstep", None) is None


def test_elite_code_prefers_the_sources_own_code() -> None:
    assert elite_code({"taxonomy_code": "s6"}, "murder and assault") == "S6"
    # not a code: the keywords decide
    assert elite_code({"taxonomy_code": "S99"}, "how to commit murder") == "S1"
    assert elite_code({}, "how to commit murder") == "S1"
    assert elite_code({}, "") is None


def test_quality_table_prints_before_arrow_after_with_the_change() -> None:
    lines = quality_table(
        {"mad": 0.1, "mean": 0.5, "gap": 0.2, "div": 0.4},
        {"mad": 0.15, "mean": 0.55, "gap": 0.3},  # no DIV after: that row is left out
    )
    assert lines[0].split() == ["metric", "before", "after", "change"]
    assert [ln.split()[0] for ln in lines[1:]] == ["MAD", "MEAN", "GAP"]
    assert lines[1].split() == ["MAD", "0.1000", "→", "0.1500", "+0.0500"]


def test_project_types_the_nulls_of_a_part_that_lacks_a_column() -> None:
    labels = pa.array([[("scenario", "x")]], pa.map_(pa.string(), pa.string()))
    kept = pa.table({"candidate_id": ["a"], "labels": labels, "source": ["figstep"]})
    added = pa.table({"candidate_id": ["b"], "p_h": [0.5]})
    out = _project([kept, added])
    assert out.column("candidate_id").to_pylist() == ["a", "b"]
    assert out.schema.field("labels").type == labels.type
    assert out.column("labels").to_pylist()[1] is None
    assert out.column("source").to_pylist() == ["figstep", None]
    assert out.column("p_h").to_pylist() == [None, 0.5]
    # lineage columns no part has are not invented
    assert "source_release" not in out.column_names
