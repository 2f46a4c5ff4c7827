"""The one internal example schema every annotation format is read into."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Example:
    image_id: str  # key into the feature store
    sentence: str  # caption or question, raw text
    source: str  # where it came from: "vqa", "mscoco", "vg", "gqa", "visual7w", "easy_vqa", ...
    question_id: int = -1  # -1 for captions
    labels: dict[str, float] = field(default_factory=dict)  # normalised answer -> soft score; {} = no answer
    main_answer: str = ""  # the answer counted for the answer vocabulary (VQA: multiple_choice_answer)
    question_type: str = ""
    answer_type: str = ""
    uid: str = ""  # the annotation's own string id when it is not an integer (GQA questionId, NLVR2 identifier)
    image_ids: list[str] = field(default_factory=list)  # every image of a multi-image example (NLVR2: img0, img1)

    @property
    def images(self) -> list[str]:
        """The example's images in order: ``image_ids``, or the one ``image_id``."""
        return list(self.image_ids) or [self.image_id]

    @property
    def is_question(self) -> bool:
        return self.question_id >= 0 or bool(self.labels)

    def to_record(self) -> dict[str, Any]:
        """Flat record for an Arrow table (answers and scores as parallel lists)."""
        return {
            "image_id": self.image_id, "sentence": self.sentence, "source": self.source,
            "question_id": int(self.question_id), "answers": list(self.labels),
            "answer_scores": [float(s) for s in self.labels.values()], "main_answer": self.main_answer,
            "question_type": self.question_type, "answer_type": self.answer_type, "uid": self.uid,
            "image_ids": list(self.image_ids),
        }

    @classmethod
    def from_record(cls, r: dict[str, Any]) -> "Example":
        return cls(r["image_id"], r["sentence"], r["source"], int(r["question_id"]),
                   dict(zip(r["answers"], r["answer_scores"])), r["main_answer"], r["question_type"], r["answer_type"],
                   r.get("uid") or "", list(r.get("image_ids") or ()))


def load_json(path: str | os.PathLike, what: str) -> Any:
    """json.load with errors that name the file and what it should have been."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} file not found: '{path}'") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{what} file '{path}' is not valid json: {e}") from None


def require(entry: Any, fields: tuple[str, ...], path: str | os.PathLike, where: str) -> None:
    if not isinstance(entry, dict):
        raise ValueError(f"'{path}', {where}: expected an object, got {type(entry).__name__}")
    for f in fields:
        if f not in entry:
            raise ValueError(f"'{path}', {where}: missing field '{f}' (has {sorted(entry)})")
