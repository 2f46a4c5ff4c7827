"""Answer vocabularies and soft scores.

- ``AnswerVocab``: an ordered answer list saved as json (answers + the normaliser that produced them).
- ``soft_score``: 0, .3, .6, .9, 1 for 0, 1, 2, 3, >=4 annotators (docs/faithful.md §6).
- ``build_answer_vocab``: answers given at least ``min_count`` times (VQA v2: 9 -> 3129 answers).
- ``build_pretrain_answer_table`` / ``map_answer_sets``: LXMERT's pretraining QA table (union over the
  QA sources) and the row mapping from it to a task's answer set (for initialising the VQA head).
"""
from __future__ import annotations

import json
import os
from collections import Counter
from typing import Callable, Iterable, Mapping

from lxmert_repro.data.answer_normalization import lxmert_convert_answer, normalize_answer
from lxmert_repro.io_utils import atomic_write_json

__all__ = [
    "AnswerVocab", "normalize_answer", "lxmert_convert_answer", "soft_score", "soft_scores_from_answers",
    "build_answer_vocab", "build_pretrain_answer_table", "map_answer_sets", "NORMALIZERS",
]

NORMALIZERS: dict[str, Callable[[str], str]] = {
    "vqa_official": normalize_answer,  # the official VQA evaluation's normalisation
    "lxmert": lxmert_convert_answer,  # LXMERT's AnswerTable.convert_ans (pretraining table)
    "none": lambda a: a,
}


def soft_score(count: int) -> float:
    """Soft target for an answer given by ``count`` of the 10 annotators (bottom-up / LXMERT)."""
    if count <= 0:
        return 0.0
    return (0.3, 0.6, 0.9)[count - 1] if count < 4 else 1.0


def soft_scores_from_answers(answers: Iterable[str], normalizer: str = "vqa_official") -> dict[str, float]:
    """Normalise the human answers of one question, count them, turn counts into soft scores."""
    norm = NORMALIZERS[normalizer]
    counts = Counter(norm(a) for a in answers)
    return {a: soft_score(c) for a, c in counts.items()}


class AnswerVocab:
    """An ordered list of answer strings; the row order of an answer head."""

    def __init__(self, answers: Iterable[str], normalizer: str = "vqa_official") -> None:
        self.answers: list[str] = list(answers)
        if normalizer not in NORMALIZERS:
            raise ValueError(f"unknown answer normalizer '{normalizer}', expected one of {sorted(NORMALIZERS)}")
        self.normalizer = normalizer
        self._index = {a: i for i, a in enumerate(self.answers)}
        if len(self._index) != len(self.answers):
            dup = [a for a, c in Counter(self.answers).items() if c > 1][:5]
            raise ValueError(f"answer vocabulary has duplicates, e.g. {dup}")

    def __len__(self) -> int:
        return len(self.answers)

    def __contains__(self, answer: str) -> bool:
        return answer in self._index

    def __getitem__(self, i: int) -> str:
        return self.answers[i]

    def index(self, answer: str) -> int:
        """Row of ``answer`` (already normalised), or -1 when it is not in the vocabulary."""
        return self._index.get(answer, -1)

    def normalize(self, answer: str) -> str:
        return NORMALIZERS[self.normalizer](answer)

    def save(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, {"normalizer": self.normalizer, "answers": self.answers})

    @classmethod
    def load(cls, path: str | os.PathLike) -> "AnswerVocab":
        """Read our json ({"answers": [...], "normalizer": ...}), a plain json list, or LXMERT's
        label2ans list / all_ans.json ([{"ans": ...}])."""
        try:
            with open(path) as f:
                obj = json.load(f)
        except FileNotFoundError:
            raise FileNotFoundError(f"answer vocabulary file not found: '{path}'") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"answer vocabulary '{path}' is not valid json: {e}") from None
        if isinstance(obj, dict) and "answers" in obj:
            return cls(obj["answers"], obj.get("normalizer", "vqa_official"))
        if isinstance(obj, list) and all(isinstance(a, str) for a in obj):
            return cls(obj)
        if isinstance(obj, list) and all(isinstance(a, dict) and "ans" in a for a in obj):
            return cls([a["ans"] for a in obj], "lxmert")
        raise ValueError(
            f"answer vocabulary '{path}': expected {{'answers': [str, ...]}}, a list of strings, "
            f"or a list of {{'ans': str}}; got {type(obj).__name__}"
        )


def build_answer_vocab(main_answers: Iterable[str], min_count: int = 9,
                       normalizer: str = "vqa_official") -> AnswerVocab:
    """Answers (one per question, e.g. VQA's ``multiple_choice_answer``) seen at least ``min_count`` times.

    VQA v2 train+val with min_count 9 gives LXMERT's 3129 answers. Order: most frequent first, ties
    alphabetical, so the file is reproducible.
    """
    norm = NORMALIZERS[normalizer]
    counts = Counter(norm(a) for a in main_answers)
    counts.pop("", None)
    kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return AnswerVocab(kept, normalizer)


def build_pretrain_answer_table(labels_by_source: Mapping[str, Iterable[Mapping[str, float]]],
                                qa_sources: Iterable[str] | None = None, min_count: int = 1) -> AnswerVocab:
    """LXMERT's pretraining QA table: the union of the answers of the QA sources (VQA, GQA, Visual7W),
    after LXMERT's conversion, keeping those labelled at least ``min_count`` times over all sources."""
    wanted = None if qa_sources is None else set(qa_sources)
    counts: Counter[str] = Counter()
    for source, labels in labels_by_source.items():
        if wanted is not None and source not in wanted:
            continue
        for label in labels:
            for ans in label:
                counts[lxmert_convert_answer(ans)] += 1
    counts.pop("", None)
    kept = sorted((a for a, c in counts.items() if c >= min_count), key=lambda a: (-counts[a], a))
    return AnswerVocab(kept, "lxmert")


def map_answer_sets(source_answers: Iterable[str], target_answers: Iterable[str],
                    convert: Callable[[str], str] = lxmert_convert_answer) -> list[int]:
    """For each target answer, the row of the same answer in ``source_answers`` (after ``convert``), or -1.

    LXMERT initialises the VQA head this way: target answers are converted like the pretraining table's
    and looked up; unmatched rows are zero.
    """
    index = {a: i for i, a in enumerate(source_answers)}
    return [index.get(convert(a), -1) for a in target_answers]
