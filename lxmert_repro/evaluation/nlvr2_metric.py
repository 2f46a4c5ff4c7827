"""NLVR2's official metrics (lil-lab/nlvr nlvr2/eval/metrics.py, re-implemented from its definitions):

- accuracy: the fraction of labelled examples whose prediction equals the label (compared case-insensitively);
- consistency: examples are grouped by their identifier with its third "-" field blanked ("dev-850-0-0" and
  "dev-850-3-0" are one sentence on two image pairs); the fraction of groups whose predictions are all correct.
Every labelled example needs a prediction (the official script stops otherwise). Reported here in percent.
Prediction file: CSV lines ``identifier,True|False``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from lxmert_repro.io_utils import atomic_write_text


def sentence_group(identifier: str) -> str:
    parts = identifier.split("-")
    if len(parts) < 3:
        raise ValueError(f"NLVR2 identifier {identifier!r}: expected split-set-pair-sentence fields joined by '-'")
    parts[2] = ""
    return "-".join(parts)


def nlvr2_scores(predictions: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, float]:
    """``{identifier: "True"/"False"}`` predictions against labels -> accuracy, consistency (%), counts."""
    missing = [i for i in labels if i not in predictions]
    if missing:
        raise ValueError(f"{len(missing)} of {len(labels)} examples have no prediction, e.g. {missing[:5]}")
    correct = 0
    consistent: dict[str, bool] = {}
    for ident, label in labels.items():
        ok = predictions[ident].lower() == label.lower()
        correct += ok
        group = sentence_group(ident)
        consistent[group] = consistent.get(group, True) and ok
    n = len(labels)
    return {
        "accuracy": 100.0 * correct / n if n else 0.0,
        "consistency": 100.0 * sum(consistent.values()) / len(consistent) if consistent else 0.0,
        "examples": n,
        "sentences": len(consistent),
    }


def write_nlvr2_predictions(path: str | os.PathLike, predictions: Mapping[str, str]) -> None:
    atomic_write_text(path, "".join(f"{i},{p}\n" for i, p in predictions.items()))


def read_nlvr2_predictions(path: str | os.PathLike) -> dict[str, str]:
    """``identifier,True|False`` lines; errors name the file and the line."""
    try:
        lines = open(path).read().splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"NLVR2 prediction file not found: '{path}'") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.strip().split(",")
        if len(fields) != 2 or fields[1].lower() not in ("true", "false"):
            raise ValueError(
                f"NLVR2 prediction file '{path}', line {n}: expected 'identifier,True|False', got {line!r}"
            )
        if fields[0] in out:
            raise ValueError(f"NLVR2 prediction file '{path}', line {n}: identifier {fields[0]} appears twice")
        out[fields[0]] = fields[1]
    return out
