"""GQA questions: the official ``*_balanced_questions.json`` and LXMERT's own GQA json (airsplay/lxmert
src/tasks/gqa_data.py reads the latter). One answer per question: label {answer: 1.0}, exact strings (the official
evaluation compares exact strings, so answers are not normalised). ``uid`` keeps the string question id."""
from __future__ import annotations

import os

from lxmert_repro.data.formats.example import Example, load_json, require


def _qid(qid: str, i: int) -> int:
    return int(qid) if qid.isdigit() else i


def read_gqa_questions(path: str | os.PathLike, image_id_format: str = "{image_id}", balanced_only: bool = True) -> list[Example]:
    """Official format: ``{questionId: {imageId, question, answer?, isBalanced, types: {structural, semantic, detailed},
    ...}}`` (test/challenge files carry no answer). ``question_type`` = structural type, ``answer_type`` = "open" for
    structural type "query", else "binary" (as the official evaluation splits them)."""
    data = load_json(path, "GQA questions")
    if not isinstance(data, dict):
        raise ValueError(f"GQA questions '{path}': expected a dict keyed by question id, got {type(data).__name__}")
    out = []
    for i, (qid, q) in enumerate(data.items()):
        require(q, ("imageId", "question"), path, f"question {qid}")
        if balanced_only and not q.get("isBalanced", True):
            continue
        ans = q.get("answer")
        structural = (q.get("types") or {}).get("structural", "")
        out.append(Example(image_id_format.format(image_id=q["imageId"]), q["question"], "gqa", _qid(str(qid), i),
                           {ans: 1.0} if ans else {}, ans or "", structural,
                           ("open" if structural == "query" else "binary") if structural else "", uid=str(qid)))
    return out


def read_lxmert_gqa(path: str | os.PathLike) -> list[Example]:
    """LXMERT's format: ``[{img_id, sent, question_id: str, label: {answer: 1.0}}]`` (no ``label`` on test)."""
    data = load_json(path, "LXMERT GQA json")
    if not isinstance(data, list):
        raise ValueError(f"LXMERT GQA json '{path}': expected a list of entries, got {type(data).__name__}")
    out = []
    for i, d in enumerate(data):
        require(d, ("img_id", "sent", "question_id"), path, f"entry {i}")
        label = d.get("label") or {}
        if not isinstance(label, dict):
            raise ValueError(f"LXMERT GQA json '{path}', entry {i}: field 'label' must be {{answer: score}}, got {label!r}")
        main = max(label, key=label.get) if label else ""
        qid = str(d["question_id"])
        out.append(Example(str(d["img_id"]), d["sent"], "gqa", _qid(qid, i), {str(k): float(v) for k, v in label.items()},
                           main, uid=qid))
    return out
