"""The official VQA accuracy on hand-computed cases, prediction files, score_prediction_file."""

import json

import pytest

from lxmert_repro.evaluation import (
    VQAEvaluator,
    question_accuracy,
    read_predictions,
    score_prediction_file,
    write_predictions,
)


@pytest.mark.parametrize("matches, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_leave_one_out_equals_soft_table(matches, expected):
    humans = ["red"] * matches + [f"other{i}" for i in range(10 - matches)]
    assert question_accuracy("red", humans) == pytest.approx(expected, abs=1e-12)


def test_hand_computed_three_matches():
    # 3 "red" + 7 "blue": each red left out sees 2 matches (2/3), each blue sees 3 (1) -> (3*2/3 + 7)/10
    assert question_accuracy("red", ["red"] * 3 + ["blue"] * 7) == pytest.approx(0.9)


def test_normalisation_only_when_humans_disagree():
    # all ten identical: prediction must match exactly (no lower-casing, no number words)
    assert question_accuracy("yes", ["yes"] * 10) == 1.0
    assert question_accuracy("Yes", ["yes"] * 10) == 0.0
    assert question_accuracy(" yes\n", ["yes"] * 10) == 1.0  # whitespace cleaning always applies
    assert question_accuracy("two", ["2"] * 10) == 0.0
    # humans differ: both sides normalised ("two" -> "2", "Two" -> "2", articles, punctuation)
    assert question_accuracy("Two", ["2"] * 9 + ["two"]) == 1.0
    assert question_accuracy("the t-shirt", ["t shirt"] * 2 + ["shirt"] * 8) == pytest.approx(0.6)


def _annotations():
    return [
        {
            "question_id": 1,
            "image_id": 10,
            "question_type": "is the",
            "answer_type": "yes/no",
            "multiple_choice_answer": "yes",
            "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)],
        },
        {
            "question_id": 2,
            "image_id": 10,
            "question_type": "how many",
            "answer_type": "number",
            "multiple_choice_answer": "2",
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                for i, a in enumerate(["2"] * 1 + ["3"] * 9)
            ],
        },
        {
            "question_id": 3,
            "image_id": 11,
            "question_type": "what color is the",
            "answer_type": "other",
            "multiple_choice_answer": "red",
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                for i, a in enumerate(["red"] * 2 + ["dark red"] * 8)
            ],
        },
    ]


def test_evaluator_aggregates_from_unrounded_means():
    ev = VQAEvaluator(_annotations())
    r = ev.evaluate({1: "yes", 2: "two", 3: "red"})
    # per question: 1.0, 0.3, 0.6 -> overall mean 0.6333.. -> 63.33
    assert r["overall"] == 63.33
    assert r["per_answer_type"] == {"number": 30.0, "other": 60.0, "yes/no": 100.0}
    assert r["per_question_type"] == {"how many": 30.0, "is the": 100.0, "what color is the": 60.0}
    assert r["per_question"] == {1: 100.0, 2: 30.0, 3: 60.0}
    assert r["num_questions"] == 3


def test_evaluator_missing_and_unknown_predictions():
    ev = VQAEvaluator(_annotations())
    with pytest.raises(ValueError, match="no prediction"):
        ev.evaluate({1: "yes"})
    assert ev.evaluate({1: "yes"}, allow_missing=True)["overall"] == 100.0
    with pytest.raises(ValueError, match="not in the annotations"):
        ev.evaluate({1: "yes", 2: "3", 3: "red", 99: "x"})


def test_prediction_file_roundtrip_and_errors(tmp_path):
    p = tmp_path / "pred.json"
    write_predictions(p, {3: "red", 1: "yes"})
    assert json.loads(p.read_text()) == [{"question_id": 1, "answer": "yes"}, {"question_id": 3, "answer": "red"}]
    assert read_predictions(p) == {1: "yes", 3: "red"}
    (tmp_path / "bad.json").write_text('[{"question_id": 1}]')
    with pytest.raises(ValueError, match="bad.json.*entry 0"):
        read_predictions(tmp_path / "bad.json")
    for qid in ('"q7"', "1.5", "true", "null"):
        (tmp_path / "bad.json").write_text(
            f'[{{"question_id": 1, "answer": "a"}}, {{"question_id": {qid}, "answer": "b"}}]'
        )
        with pytest.raises(
            ValueError,
            match=r"prediction file '.*bad.json', entry 1: field 'question_id' is "
            r".*, expected an integer",
        ):
            read_predictions(tmp_path / "bad.json")
    (tmp_path / "ok.json").write_text('[{"question_id": "12", "answer": "a"}, {"question_id": 13.0, "answer": "b"}]')
    assert read_predictions(tmp_path / "ok.json") == {12: "a", 13: "b"}


def test_score_prediction_file(tmp_path):
    anns = _annotations()
    (tmp_path / "ann.json").write_text(json.dumps({"annotations": anns}))
    (tmp_path / "q.json").write_text(
        json.dumps(
            {
                "data_subtype": "val2014",
                "questions": [
                    {"image_id": 10, "question": "Is it?", "question_id": 1},
                    {"image_id": 11, "question": "What color?", "question_id": 3},
                ],
            }
        )
    )
    write_predictions(tmp_path / "pred.json", {1: "no", 3: "Red."})
    r = score_prediction_file(tmp_path / "pred.json", tmp_path / "q.json", tmp_path / "ann.json")
    assert r["overall"] == 30.0 and r["num_questions"] == 2  # 0.0 and 0.6
    assert r["per_answer_type"] == {"other": 60.0, "yes/no": 0.0}


def test_soft_score_evaluator_breakdown():
    from lxmert_repro.evaluation.vqa_metric import SoftScoreEvaluator

    ev = SoftScoreEvaluator(
        [
            {
                "question_id": 1,
                "answers": ["yes"],
                "answer_scores": [1.0],
                "answer_type": "yes/no",
                "question_type": "is",
            },
            {
                "question_id": 2,
                "answers": ["red", "dark red"],
                "answer_scores": [0.6, 0.3],
                "answer_type": "other",
                "question_type": "what color",
            },
            {
                "question_id": 3,
                "answers": ["2"],
                "answer_scores": [1.0],
                "answer_type": "number",
                "question_type": "how many",
            },
            {
                "question_id": 4,
                "answers": ["no"],
                "answer_scores": [1.0],
                "answer_type": "yes/no",
                "question_type": "is",
            },
        ]
    )
    r = ev.evaluate({1: "yes", 2: "dark red", 3: "3", 4: "yes"})
    assert r["overall"] == 32.5  # (1 + 0.3 + 0 + 0) / 4
    assert r["per_answer_type"] == {"number": 0.0, "other": 30.0, "yes/no": 50.0}
    assert r["per_question_type"] == {"how many": 0.0, "is": 50.0, "what color": 30.0}
    with pytest.raises(ValueError, match="no prediction"):
        ev.evaluate({1: "yes"})
    with pytest.raises(ValueError, match="record 0: missing field 'answer_scores'"):
        SoftScoreEvaluator([{"question_id": 1, "answers": ["a"]}])
