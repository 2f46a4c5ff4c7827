"""Prediction files in the VQA evaluation server's format: ``[{"question_id": int, "answer": str}, ...]``."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping

from lxmert_repro.io_utils import atomic_write_json


def write_predictions(path: str | os.PathLike, predictions: Mapping[int, str] | Iterable[tuple[int, str]]) -> None:
    """Write ``{question_id: answer}`` (or (question_id, answer) pairs) atomically, sorted by question id."""
    items = predictions.items() if isinstance(predictions, Mapping) else predictions
    rows = sorted(({"question_id": int(q), "answer": str(a)} for q, a in items), key=lambda r: r["question_id"])
    atomic_write_json(path, rows, indent=None)


def read_predictions(path: str | os.PathLike) -> dict[int, str]:
    """Read a prediction file; errors name the file, the entry and what was expected."""
    try:
        with open(path) as f:
            rows = json.load(f)
    except FileNotFoundError:
        raise FileNotFoundError(f"prediction file not found: '{path}'") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"prediction file '{path}' is not valid json: {e}") from None
    if not isinstance(rows, list):
        raise ValueError(
            f"prediction file '{path}': expected a list of {{question_id, answer}}, got {type(rows).__name__}"
        )
    out: dict[int, str] = {}
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or "question_id" not in row or "answer" not in row:
            raise ValueError(
                f"prediction file '{path}', entry {i}: expected {{'question_id': int, 'answer': str}}, got {row!r}"
            )
        if not isinstance(row["answer"], str):
            raise ValueError(
                f"prediction file '{path}', entry {i}: field 'answer' must be a string, got {row['answer']!r}"
            )
        qid = _question_id(row["question_id"])
        if qid is None:
            raise ValueError(
                f"prediction file '{path}', entry {i}: field 'question_id' is {row['question_id']!r}, "
                "expected an integer"
            )
        if qid in out:
            raise ValueError(f"prediction file '{path}', entry {i}: question_id {qid} appears twice")
        out[qid] = row["answer"]
    return out


def _question_id(value: object) -> int | None:
    """An integer id: a JSON int, or a string or float that is exactly one ("42", 42.0); None otherwise."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    return None
