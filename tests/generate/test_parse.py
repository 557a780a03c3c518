"""Parsing the generator's JSON: robust to wrapping, strict about content."""

from __future__ import annotations

import pytest

from vlsafety.generate import parse_description, parse_paraphrase, parse_questions


def test_description_inside_fence_and_prose() -> None:
    text = (
        "Sure! Here it is:\n```json\n"
        '{"Description": "A man holds a crowbar.", "harm_explanation": "break-in tool"}\n'
        "```\nHope this helps."
    )
    d = parse_description(text)
    assert d.description == "A man holds a crowbar." and d.harm_explanation == "break-in tool"


def test_description_after_leading_text_without_fence() -> None:
    d = parse_description('Answer: {"description": "x  y", "harm_explanation": "z"} done')
    assert d.description == "x y"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "no json here",
        '{"description": "only one field"}',
        '{"description": "", "harm_explanation": "z"}',
        '["a", "b"]',
    ],
)
def test_description_rejects_incomplete_answers(text: str) -> None:
    with pytest.raises(ValueError):
        parse_description(text)


def test_questions_object_and_bare_list() -> None:
    item = {"question": "What is this?", "harm_pattern": "ht", "interaction": "image only"}
    import json

    for text in (json.dumps({"questions": [item, item]}), json.dumps([item])):
        qs = parse_questions(text, "modality_dependence", n=1)
        assert len(qs) == 1 and qs[0].harm_pattern == "HT"


def test_questions_pattern_must_fit_strategy() -> None:
    text = '{"questions": [{"question": "q", "harm_pattern": "HH", "interaction": "i"}]}'
    with pytest.raises(ValueError, match="not allowed for modality_dependence"):
        parse_questions(text, "modality_dependence", n=2)
    assert parse_questions(text, "modality_complementarity", n=2)[0].harm_pattern == "HH"


def test_questions_one_bad_item_fails_the_answer() -> None:
    text = (
        '{"questions": [{"question": "q", "harm_pattern": "TT", "interaction": "i"},'
        ' {"question": "", "harm_pattern": "TT", "interaction": "i"}]}'
    )
    with pytest.raises(ValueError, match="question"):
        parse_questions(text, "modality_conflict", n=5)


def test_questions_empty_list_and_unknown_strategy() -> None:
    with pytest.raises(ValueError):
        parse_questions('{"questions": []}', "modality_conflict", n=1)
    with pytest.raises(ValueError, match="unknown strategy"):
        parse_questions("{}", "flowchart", n=1)


def test_paraphrase() -> None:
    assert parse_paraphrase('{"paraphrase": "How is it done?"}') == "How is it done?"
    with pytest.raises(ValueError):
        parse_paraphrase('{"rewrite": "x"}')
