"""Answer normalisation (official VQA), soft scores, vocabularies, the pretraining table mapping."""

import pytest

from lxmert_repro.data.answers import (
    AnswerVocab,
    build_answer_vocab,
    build_pretrain_answer_table,
    lxmert_convert_answer,
    map_answer_sets,
    normalize_answer,
    soft_score,
    soft_scores_from_answers,
)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("two", "2"),
        ("Ten", "10"),
        ("none", "0"),
        ("zero", "0"),
        ("eleven", "eleven"),
        ("the dog", "dog"),
        ("A man", "man"),
        ("an apple", "apple"),
        ("t-shirt", "t shirt"),  # '-' not next to a space: replaced by a space
        ("1,000", "1000"),  # a digit,digit comma: every listed punctuation character is deleted
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("yes.", "yes"),
        ("  Yes\n", "yes"),
        ("yes\tsir", "yes sir"),
        ("dont", "don't"),
        ("isnt", "isn't"),
        ("whats", "what's"),
        ("won't", "won't"),
        ("Im", "im"),  # the official table's capitalised keys never match: text is lower-cased first
        ("red, white", "red white"),  # ', ' -> the comma is deleted
        ("red,white", "red white"),  # no space next to it: replaced by a space
        ("hello!", "hello"),
        ("(left)", "left"),
        ("a/b", "b"),
        ("x/y", "x y"),
        ("x - y", "x y"),
        ("1-2", "1 2"),
        ("1,000-2", "10002"),
        ("one two", "1 2"),
        ("the the", ""),
        ("." * 40 + "x", "." * 8 + "x"),  # quirk: re.UNICODE in sub()'s count slot -> at most 32 removals
    ],
)
def test_normalize_answer_official(raw, expected):
    assert normalize_answer(raw) == expected


def test_soft_score_table():
    assert [soft_score(c) for c in range(7)] == [0.0, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0]
    assert soft_scores_from_answers(["two", "2", "2", "Yes", "blue"] + ["red"] * 5) == {
        "2": 0.9,
        "yes": 0.3,
        "blue": 0.3,
        "red": 1.0,
    }


def test_build_answer_vocab_min_count_and_roundtrip(tmp_path):
    mc = ["yes"] * 10 + ["two"] * 5 + ["2"] * 4 + ["red"] * 8 + ["blue"] * 9
    v = build_answer_vocab(mc, min_count=9)
    assert v.answers == ["yes", "2", "blue"]  # "two" and "2" merge (9); red (8) is dropped
    assert v.index("2") == 1 and v.index("red") == -1 and "blue" in v and len(v) == 3
    v.save(tmp_path / "ans.json")
    back = AnswerVocab.load(tmp_path / "ans.json")
    assert back.answers == v.answers and back.normalizer == "vqa_official"


def test_answer_vocab_load_errors_and_formats(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.json"):
        AnswerVocab.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text('{"labels": 3}')
    with pytest.raises(ValueError, match="bad.json"):
        AnswerVocab.load(tmp_path / "bad.json")
    (tmp_path / "all_ans.json").write_text('[{"ans": "yes", "dsets": ["vqa"]}, {"ans": "man", "dsets": ["gqa"]}]')
    v = AnswerVocab.load(tmp_path / "all_ans.json")
    assert v.answers == ["yes", "man"] and v.normalizer == "lxmert"
    with pytest.raises(ValueError, match="duplicates"):
        AnswerVocab(["a", "a"])


def test_lxmert_convert_and_pretrain_table_mapping():
    assert [lxmert_convert_answer(a) for a in ["The man", "Two.", "grey", "an apple", "a woman", ""]] == [
        "man",
        "2",
        "gray",
        "apple",
        "woman",
        "",
    ]
    table = build_pretrain_answer_table(
        {
            "vqa": [{"yes": 1.0}, {"two": 0.6, "3": 0.3}],
            "gqa": [{"the man": 1.0}, {"yes": 1.0}],
            "mscoco": [{"ignored": 1.0}],
        },
        qa_sources=["vqa", "gqa"],
    )
    assert table.answers == ["yes", "2", "3", "man"]
    assert map_answer_sets(table.answers, ["man", "two", "3", "dog", "yes"]) == [3, 1, 2, -1, 0]
