"""The official VQA accuracy (docs/faithful.md §7), with its quirks, plus LXMERT's soft-score accuracy
(``SoftScoreEvaluator``, for data without official annotation files).

Per question: whitespace-clean the prediction and the 10 human answers; only if the human answers are
not all the same string, normalise both (punctuation, number words, articles, contractions); then for
each human answer count matches of the prediction among the other 9, score min(1, matches/3), and
average the 10 scores. Reported in percent rounded to 2 decimals, overall / per answer type / per
question type, each a mean of the unrounded per-question values.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from lxmert_repro.data.answer_normalization import clean_whitespace, process_digit_article, process_punctuation
from lxmert_repro.evaluation.predictions import read_predictions


def question_accuracy(prediction: str, human_answers: Sequence[str]) -> float:
    """Official accuracy of one prediction against the human answers (normally 10), in [0, 1]."""
    res = clean_whitespace(prediction)
    gts = [clean_whitespace(a) for a in human_answers]
    if len(set(gts)) > 1:
        gts = [process_digit_article(process_punctuation(a)) for a in gts]
        res = process_digit_article(process_punctuation(res))
    matches = [g == res for g in gts]
    total = sum(matches)
    # leave-one-out: the other answers' matches = total minus this one's own match
    accs = [min(1.0, (total - m) / 3.0) for m in matches]
    return sum(accs) / len(accs)


def score_questions(
    predictions: Mapping[int, str],
    known: Mapping[int, Any],
    question_ids: Iterable[int] | None,
    allow_missing: bool,
    score: Callable[[int], float],
    types: Callable[[int], tuple[str, str]],
    ndigits: int,
    source: str,
) -> dict[str, Any]:
    """The official evaluator's report for any per-question ``score`` in [0, 1]: overall / per answer type / per
    question type (``types(q)`` = (answer type, question type)), each a mean of the unrounded per-question values.

    Like the official code, the predictions must cover exactly the questions scored; with ``allow_missing``
    questions without a prediction are skipped and counted instead.
    """
    qids = list(known) if question_ids is None else [int(q) for q in question_ids]
    unknown = [q for q in predictions if int(q) not in known]
    if unknown:
        raise ValueError(f"{len(unknown)} predicted question ids are not in the {source}, e.g. {unknown[:5]}")
    missing = [q for q in qids if q not in predictions]
    if missing and not allow_missing:
        raise ValueError(f"{len(missing)} questions of the {source} have no prediction, e.g. {missing[:5]}")
    per_q = {q: score(q) for q in qids if q in predictions}
    if not per_q:
        raise ValueError("no question to score")
    by_atype: dict[str, list[float]] = defaultdict(list)
    by_qtype: dict[str, list[float]] = defaultdict(list)
    for q, acc in per_q.items():
        atype, qtype = types(q)
        by_atype[atype].append(acc)
        by_qtype[qtype].append(acc)
    pct = lambda xs: round(100.0 * sum(xs) / len(xs), ndigits)  # noqa: E731
    return {
        "overall": pct(list(per_q.values())),
        "per_answer_type": {k: pct(v) for k, v in sorted(by_atype.items())},
        "per_question_type": {k: pct(v) for k, v in sorted(by_qtype.items())},
        "per_question": {q: round(100.0 * a, ndigits) for q, a in per_q.items()},
        "num_questions": len(per_q),
        "num_missing": len(missing),
    }


class VQAEvaluator:
    """Scores predictions against official VQA annotations (``annotations: [{question_id, answers, ...}]``)."""

    def __init__(self, annotations: Iterable[Mapping[str, Any]], ndigits: int = 2) -> None:
        self.ndigits = ndigits
        self.annotations: dict[int, Mapping[str, Any]] = {}
        for i, ann in enumerate(annotations):
            for field in ("question_id", "answers"):
                if field not in ann:
                    raise ValueError(f"annotation {i}: missing field '{field}'")
            self.annotations[int(ann["question_id"])] = ann

    @classmethod
    def from_file(cls, annotations_path: str | os.PathLike, ndigits: int = 2) -> VQAEvaluator:
        from lxmert_repro.data.formats.vqa_v2 import load_vqa_annotations

        return cls(load_vqa_annotations(annotations_path), ndigits)

    def evaluate(
        self, predictions: Mapping[int, str], question_ids: Iterable[int] | None = None, allow_missing: bool = False
    ) -> dict[str, Any]:
        """Official accuracy over ``question_ids`` (default: every annotated question); see ``score_questions``."""

        def score(q: int) -> float:
            return question_accuracy(predictions[q], [a["answer"] for a in self.annotations[q]["answers"]])

        def types(q: int) -> tuple[str, str]:
            return self.annotations[q].get("answer_type", ""), self.annotations[q].get("question_type", "")

        return score_questions(
            predictions, self.annotations, question_ids, allow_missing, score, types, self.ndigits, "annotations"
        )


def vqa_accuracy(
    predictions: Mapping[int, str], annotations: Iterable[Mapping[str, Any]], ndigits: int = 2
) -> dict[str, Any]:
    """Functional form of ``VQAEvaluator(annotations).evaluate(predictions)``."""
    return VQAEvaluator(annotations, ndigits).evaluate(predictions)


class SoftScoreEvaluator:
    """LXMERT's soft-score accuracy with the official evaluator's breakdown, for data without official
    annotation files (easy-VQA, LXMERT's own json splits): each question scores the soft label of the predicted
    answer (0 when absent), reported overall / per answer type / per question type like ``VQAEvaluator``.
    On single-answer data (easy-VQA) this is plain accuracy."""

    def __init__(self, records: Iterable[Mapping[str, Any]], ndigits: int = 2) -> None:
        self.ndigits = ndigits
        self.targets: dict[int, dict[str, float]] = {}
        self.types: dict[int, tuple[str, str]] = {}
        for i, r in enumerate(records):
            for field in ("question_id", "answers", "answer_scores"):
                if field not in r:
                    raise ValueError(f"record {i}: missing field '{field}'")
            q = int(r["question_id"])
            self.targets[q] = dict(zip(r["answers"], map(float, r["answer_scores"])))
            self.types[q] = (r.get("answer_type") or "", r.get("question_type") or "")

    @classmethod
    def from_split(cls, split: Any, ndigits: int = 2) -> SoftScoreEvaluator:
        """From a prepared split (a ``datasets.Dataset`` with the prepare schema's columns)."""
        cols = ["question_id", "answers", "answer_scores", "answer_type", "question_type"]
        table = split.select_columns(cols).to_dict()
        return cls((dict(zip(cols, row)) for row in zip(*(table[c] for c in cols))), ndigits)

    def evaluate(
        self, predictions: Mapping[int, str], question_ids: Iterable[int] | None = None, allow_missing: bool = False
    ) -> dict[str, Any]:
        return score_questions(
            predictions,
            self.targets,
            question_ids,
            allow_missing,
            lambda q: self.targets[q].get(predictions[q], 0.0),
            self.types.__getitem__,
            self.ndigits,
            "split",
        )


def score_prediction_file(
    predictions_path: str | os.PathLike,
    questions_path: str | os.PathLike | None,
    annotations_path: str | os.PathLike,
    allow_missing: bool = False,
) -> dict[str, Any]:
    """Score a server-format prediction file against official VQA v2 questions + annotations files.

    The questions file (optional) restricts scoring to its question ids (e.g. a minival split whose
    annotations live in a larger file). Returns the ``VQAEvaluator.evaluate`` dict without per-question
    values, plus the paths used.
    """
    predictions = read_predictions(predictions_path)
    evaluator = VQAEvaluator.from_file(annotations_path)
    qids = None
    if questions_path is not None:
        from lxmert_repro.data.formats.vqa_v2 import load_vqa_questions

        qids = [int(q["question_id"]) for q in load_vqa_questions(questions_path)]
    result = evaluator.evaluate(predictions, qids, allow_missing=allow_missing)
    result.pop("per_question")
    result.update(
        predictions=str(predictions_path),
        annotations=str(annotations_path),
        questions=None if questions_path is None else str(questions_path),
    )
    return result
