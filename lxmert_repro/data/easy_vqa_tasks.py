"""easy-VQA rewritten in other tasks' formats, so GQA and NLVR2 run on shipped data (scripts/easy_vqa_to_gqa.py,
scripts/easy_vqa_to_nlvr2.py). Every easy-VQA image holds one shape of one colour; its 24 question templates are
a colour or a shape query, or a (possibly negated) existence check of a colour or a shape.

GQA format (fields as the official balanced-questions json): ``types`` / ``semantic`` / ``groups`` from the
template; ``entailed``: the other questions about the same image and the same property (colour or shape), whose
answers follow from this one's; ``isBalanced`` true (easy-VQA's answers are near-uniform per template: yes 14229 /
no 14178, each colour 604-692, each shape 1612-1701 of the training questions). Choices: the template's answer set
(yes/no, the 8 colours, the 3 shapes) is both the valid and the plausible set.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from lxmert_repro.data.formats.easy_vqa import easy_vqa_root
from lxmert_repro.data.formats.example import load_json

COLORS = ("red", "green", "blue", "black", "gray", "teal", "brown", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Template:
    structural: str  # GQA structural type: "query" (open) or "verify" (binary)
    semantic: str  # GQA semantic type: "attr" (colour), "cat" (shape category), "obj" (existence)
    detailed: str
    program: tuple[tuple[str, str], ...]  # GQA semantic operations (operation, argument)
    aspect: str  # "color" or "shape": what the answer tells about the image
    global_group: str | None  # GQA groups.global (answer-type group of open questions; None for binary ones)


def classify(question: str) -> Template:
    """The GQA annotation of one easy-VQA question, from its template."""
    words = _WORD.findall(question.lower())
    color = next((w for w in words if w in COLORS), None)
    shape = next((w for w in words if w in SHAPES), None)
    negated = "not" in words or "no" in words
    target = shape or "shape"
    select = [("select", target)] + ([("filter color", color)] if color else [])
    if words[0] == "what":
        if "color" in words:
            return Template("query", "attr", "colorQuery", (*select, ("query", "color")), "color", "color")
        return Template("query", "cat", "categoryQuery", (*select, ("query", "name")), "shape", "shape")
    if color is None and shape is None:
        raise ValueError(f"easy-VQA question {question!r} matches no template")
    aspect = "color" if color else "shape"
    detailed = ("existAttr" if color else "exist") + ("Not" if negated else "")
    program = (*select, ("exist", "?")) + ((("not", "?"),) if negated else ())
    return Template("verify", "obj", detailed, program, aspect, None)


def easy_vqa_questions(split: str, root: str | os.PathLike | None = None) -> list[list[Any]]:
    from pathlib import Path

    return load_json(Path(root or easy_vqa_root()) / split / "questions.json", "easy-VQA questions")


def to_gqa(rows: list[list[Any]], split: str) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, list[str]]]]:
    """easy-VQA ``[question, answer, image]`` rows -> (GQA questions dict, GQA choices dict). Question ids are the
    row number, zero-padded to 8 digits (GQA's ids are digit strings); image ids "{split}_{image}"."""
    questions: dict[str, dict[str, Any]] = {}
    by_image: dict[tuple[str, str], list[str]] = {}
    templates = []
    for n, (q, a, img) in enumerate(rows):
        t = classify(q)
        qid = f"{n:08d}"
        templates.append((qid, t))
        by_image.setdefault((f"{split}_{int(img)}", t.aspect), []).append(qid)
        questions[qid] = {
            "imageId": f"{split}_{int(img)}", "question": q, "answer": a,
            "fullAnswer": f"{'Yes' if a == 'yes' else 'No' if a == 'no' else 'The answer is ' + a}.",
            "isBalanced": True,
            "types": {"structural": t.structural, "semantic": t.semantic, "detailed": t.detailed},
            "semantic": [{"operation": op, "argument": arg, "dependencies": [i - 1] if i else []}
                         for i, (op, arg) in enumerate(t.program)],
            "groups": {"global": t.global_group, "local": f"{t.structural}-{t.aspect}"},
            "annotations": {"question": {}, "answer": {}, "fullAnswer": {}},
            "entailed": [],
            "equivalent": [qid],
        }
    choices: dict[str, dict[str, list[str]]] = {}
    for qid, t in templates:
        q = questions[qid]
        q["entailed"] = [e for e in by_image[(q["imageId"], t.aspect)] if e != qid]
        valid = ["yes", "no"] if t.structural == "verify" else list(COLORS if t.aspect == "color" else SHAPES)
        choices[qid] = {"valid": valid, "plausible": list(valid)}
    return questions, choices
