"""VQA v2 official files: questions json + (optional) annotations json."""
from __future__ import annotations

import os
from typing import Any

from lxmert_repro.data.answers import build_answer_vocab, soft_scores_from_answers
from lxmert_repro.data.answer_normalization import normalize_answer
from lxmert_repro.data.formats.example import Example, load_json, require

DEFAULT_IMAGE_ID_FORMAT = "COCO_{subtype}_{image_id:012d}"  # LXMERT's feature TSV ids


def load_vqa_questions(path: str | os.PathLike) -> list[dict[str, Any]]:
    obj = load_json(path, "VQA questions")
    if not isinstance(obj, dict) or "questions" not in obj:
        raise ValueError(f"VQA questions file '{path}': expected an object with a 'questions' list")
    for i, q in enumerate(obj["questions"]):
        require(q, ("image_id", "question", "question_id"), path, f"questions[{i}]")
    return obj["questions"]


def load_vqa_annotations(path: str | os.PathLike) -> list[dict[str, Any]]:
    obj = load_json(path, "VQA annotations")
    if not isinstance(obj, dict) or "annotations" not in obj:
        raise ValueError(f"VQA annotations file '{path}': expected an object with an 'annotations' list")
    for i, a in enumerate(obj["annotations"]):
        require(a, ("question_id", "image_id", "answers"), path, f"annotations[{i}]")
        for j, ans in enumerate(a["answers"]):
            require(ans, ("answer",), path, f"annotations[{i}].answers[{j}]")
    return obj["annotations"]


def read_vqa_v2(questions_path: str | os.PathLike, annotations_path: str | os.PathLike | None = None,
                image_id_format: str = DEFAULT_IMAGE_ID_FORMAT, subtype: str | None = None) -> list[Example]:
    """One example per question. Labels: soft scores of the normalised human answers (all of them;
    the answer vocabulary filters later). ``image_id_format`` gets ``image_id`` (int) and ``subtype``
    (e.g. train2014, from the file's ``data_subtype`` unless given)."""
    qobj = load_json(questions_path, "VQA questions")
    questions = load_vqa_questions(questions_path)
    sub = subtype or qobj.get("data_subtype", "")
    anns: dict[int, dict[str, Any]] = {}
    if annotations_path is not None:
        anns = {int(a["question_id"]): a for a in load_vqa_annotations(annotations_path)}
    out = []
    for q in questions:
        qid = int(q["question_id"])
        ex = Example(image_id=image_id_format.format(image_id=int(q["image_id"]), subtype=sub),
                     sentence=q["question"], source="vqa", question_id=qid)
        if annotations_path is not None:
            a = anns.get(qid)
            if a is None:
                raise ValueError(f"VQA annotations '{annotations_path}': no annotation for question_id {qid} "
                                 f"of '{questions_path}'")
            ex.labels = soft_scores_from_answers(x["answer"] for x in a["answers"])
            ex.main_answer = normalize_answer(a.get("multiple_choice_answer", ""))
            ex.question_type = a.get("question_type", "")
            ex.answer_type = a.get("answer_type", "")
        out.append(ex)
    return out


def vqa_answer_vocab_from_files(annotations_paths: list[str], min_count: int = 9):
    """LXMERT's VQA answer set: normalised multiple_choice_answer seen >= min_count times (train+val -> 3129)."""
    main = [a.get("multiple_choice_answer", "") for p in annotations_paths for a in load_vqa_annotations(p)]
    return build_answer_vocab(main, min_count)
