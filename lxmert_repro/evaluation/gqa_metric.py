"""The official GQA evaluation (eval.py of the GQA release; re-implemented from its definitions, cited copy:
MILVLG/openvqa openvqa/datasets/gqa/eval/gqa_eval.py), over the balanced questions:

- accuracy: exact string match of prediction and answer; ``open``: questions of structural type "query",
  ``binary``: every other structural type;
- validity / plausibility: the prediction is among the question's valid / plausible answers of the choices file
  (questions whose detailed type contains "Common" accept exactly "color", "material", "shape");
- consistency: for each question answered correctly that entails others, the accuracy on those entailed questions
  (averaged over such questions);
- distribution: per ``groups.global`` group, chi-square of predicted vs gold answer counts (sum over the gold
  answers of (o - e)^2 / e), averaged over groups weighted by the group's gold count, divided by 100 (lower is better);
- accuracy per structural type, semantic type, number of words, number of reasoning steps (semantic operations
  other than "exist", "query: name", "choose name").
Scores are percentages (the official script multiplies by 100); per-type entries are {accuracy, questions}.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

from lxmert_repro.data.formats.example import load_json

NON_STEPS = ("exist", "query: name", "choose name")  # operations that add no reasoning step (official)
COMMON_CHOICES = ("color", "material", "shape")  # the official answer set of "Common" questions


def words_number(question: Mapping[str, Any]) -> int:
    return len(question["question"].split())


def steps_number(question: Mapping[str, Any]) -> int:
    return sum(
        1
        for c in question.get("semantic") or ()
        if not any(o in f"{c['operation']}: {c['argument']}" for o in NON_STEPS)
    )


def _mean(xs: list[float]) -> float:
    return 100.0 * sum(xs) / len(xs) if xs else 0.0  # the official avg() of an empty list is 0


def chi_square(gold: Mapping[str, Mapping[str, int]], predicted: Mapping[str, Mapping[str, int]]) -> float:
    """Group-size weighted mean over groups of sum_a (o_a - e_a)^2 / e_a, a over the group's gold answers."""
    total_score, total = 0.0, 0
    for group, counts in gold.items():
        score = sum((predicted.get(group, {}).get(a, 0) - e) ** 2 / e for a, e in counts.items())
        n = sum(counts.values())
        total_score += score * n
        total += n
    return total_score / total if total else 0.0


class GQAEvaluator:
    """Scores ``{questionId: prediction}`` against the official questions json (dict keyed by question id)."""

    def __init__(
        self,
        questions: Mapping[str, Mapping[str, Any]],
        choices: Mapping[str, Mapping[str, Any]] | None = None,
        source: str = "questions",
    ) -> None:
        self.questions, self.choices, self.source = questions, choices, source
        for qid, q in questions.items():
            for f in ("question", "answer", "isBalanced", "types", "groups", "semantic"):
                if f not in q:
                    raise ValueError(f"GQA questions '{source}', question {qid}: missing field '{f}'")

    @classmethod
    def from_files(
        cls, questions_path: str | os.PathLike, choices_path: str | os.PathLike | None = None
    ) -> GQAEvaluator:
        questions = load_json(questions_path, "GQA questions")
        if not isinstance(questions, dict):
            raise ValueError(f"GQA questions '{questions_path}': expected a dict keyed by question id")
        choices = load_json(choices_path, "GQA choices") if choices_path else None
        return cls(questions, choices, str(questions_path))

    def evaluate(self, predictions: Mapping[str, str], consistency: bool = False) -> dict[str, Any]:
        qs = self.questions
        # the official script needs a prediction for every balanced question (every question with consistency)
        missing = [q for q, d in qs.items() if q not in predictions and (consistency or d["isBalanced"])]
        if missing:
            raise ValueError(f"{len(missing)} questions of '{self.source}' have no prediction, e.g. {missing[:5]}")
        scores: dict[str, list[float]] = {
            k: [] for k in ("accuracy", "binary", "open", "validity", "plausibility", "consistency")
        }
        per: dict[str, dict[Any, list[float]]] = {
            k: defaultdict(list)
            for k in ("accuracyPerStructuralType", "accuracyPerSemanticType", "accuracyPerLength", "accuracyPerSteps")
        }
        gold_dist: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        pred_dist: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for qid, q in qs.items():
            if not q["isBalanced"]:
                continue
            gold, pred = q["answer"], predictions[qid]
            correct = float(pred == gold)
            scores["accuracy"].append(correct)
            per["accuracyPerLength"][words_number(q)].append(correct)
            per["accuracyPerSteps"][steps_number(q)].append(correct)
            per["accuracyPerStructuralType"][q["types"]["structural"]].append(correct)
            per["accuracyPerSemanticType"][q["types"]["semantic"]].append(correct)
            scores["open" if q["types"]["structural"] == "query" else "binary"].append(correct)
            if self.choices is not None:
                c = self.choices.get(qid)
                if c is None:
                    raise ValueError(f"GQA choices: no entry for question {qid}")
                common = "Common" in q["types"].get("detailed", "")
                scores["validity"].append(float(pred in (COMMON_CHOICES if common else c["valid"])))
                scores["plausibility"].append(float(pred in (COMMON_CHOICES if common else c["plausible"])))
            group = (q.get("groups") or {}).get("global")
            if group is not None:
                gold_dist[group][gold] += 1
                pred_dist[group][pred] += 1
            if consistency and correct:
                entailed = [e for e in q.get("entailed") or () if e != qid]
                if entailed:
                    absent = [e for e in entailed if e not in qs]
                    if absent:
                        raise ValueError(
                            f"question {qid} entails {absent[:3]}, not in '{self.source}' (consistency "
                            "needs the questions file that holds the entailed questions)"
                        )
                    scores["consistency"].append(
                        sum(float(predictions[e] == qs[e]["answer"]) for e in entailed) / len(entailed)
                    )
        out: dict[str, Any] = {"questions": len(scores["accuracy"])}
        for k in ("accuracy", "binary", "open"):
            out[k] = _mean(scores[k])
        if self.choices is not None:
            out["validity"], out["plausibility"] = _mean(scores["validity"]), _mean(scores["plausibility"])
        if consistency:
            out["consistency"] = _mean(scores["consistency"])
        out["distribution"] = chi_square(gold_dist, pred_dist) / 100.0
        for k, table in per.items():
            out[k] = {str(t): {"accuracy": _mean(v), "questions": len(v)} for t, v in sorted(table.items())}
        return out


def read_gqa_predictions(path: str | os.PathLike) -> dict[str, str]:
    """The submission format ``[{"questionId": str, "prediction": str}]``; errors name the file and the entry."""
    rows = load_json(path, "GQA predictions")
    if not isinstance(rows, list):
        raise ValueError(f"GQA predictions '{path}': expected a list of {{questionId, prediction}}")
    out: dict[str, str] = {}
    for i, r in enumerate(rows):
        if (
            not isinstance(r, dict)
            or not isinstance(r.get("questionId"), (str, int))
            or not isinstance(r.get("prediction"), str)
        ):
            raise ValueError(
                f"GQA predictions '{path}', entry {i}: expected {{'questionId': str, 'prediction': str}}, got {r!r}"
            )
        qid = str(r["questionId"])
        if qid in out:
            raise ValueError(f"GQA predictions '{path}', entry {i}: questionId {qid} appears twice")
        out[qid] = r["prediction"]
    return out


def write_gqa_predictions(path: str | os.PathLike, predictions: Mapping[str, str]) -> None:
    from lxmert_repro.io_utils import atomic_write_json

    atomic_write_json(path, [{"questionId": q, "prediction": p} for q, p in predictions.items()], indent=None)
