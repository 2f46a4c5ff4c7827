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
from typing import Any, Sequence

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


# ------------------------------------------------------------------------------------------------------------------
# NLVR2 format: statements about two easy-VQA images
# ------------------------------------------------------------------------------------------------------------------

def image_attributes(rows: list[list[Any]]) -> dict[int, tuple[str, str]]:
    """{image: (colour, shape)} for the images whose own questions state both (a query's answer, a query that names
    the other property, or a yes/no existence answer); images with a missing or contradictory property are left out."""
    seen: dict[int, dict[str, set[str]]] = {}
    for q, a, img in rows:
        t = classify(q)
        words = _WORD.findall(q.lower())
        props = seen.setdefault(int(img), {"color": set(), "shape": set()})
        color = next((w for w in words if w in COLORS), None)
        shape = next((w for w in words if w in SHAPES), None)
        if t.structural == "query":
            props[t.aspect].add(a)
            if color:
                props["color"].add(color)
            if shape:
                props["shape"].add(shape)
        elif (a == "yes") != ("not" in words or "no" in words):  # "is there a red shape?" yes / "... not ..." no
            props[t.aspect].add(color if t.aspect == "color" else shape)
    return {i: (next(iter(p["color"])), next(iter(p["shape"]))) for i, p in sorted(seen.items())
            if len(p["color"]) == 1 and len(p["shape"]) == 1}


Attr = tuple[str, str]  # (colour, shape) of one image


TEMPLATES = ("both_shape", "both_color", "left_not_right", "same_color", "same_shape", "exactly_one",
             "left_and_right", "at_least_one")


def _statement(kind: str, c: str, s: str) -> tuple[str, Any]:
    """One statement about the pair (left, right) and its truth function; every one needs both images."""
    if kind == "both_shape":
        return f"both images contain a {s}.", lambda l, r: l[1] == s and r[1] == s
    if kind == "both_color":
        return f"both shapes are {c}.", lambda l, r: l[0] == c and r[0] == c
    if kind == "left_not_right":
        return f"the left shape is {c} and the right one is not.", lambda l, r: l[0] == c and r[0] != c
    if kind == "same_color":
        return "the two shapes have the same color.", lambda l, r: l[0] == r[0]
    if kind == "same_shape":
        return "the two images show the same shape.", lambda l, r: l[1] == r[1]
    if kind == "exactly_one":
        return f"exactly one image contains a {s}.", lambda l, r: (l[1] == s) != (r[1] == s)
    if kind == "left_and_right":
        return (f"the left image contains a {s} and the right image contains a {c} shape.",
                lambda l, r: l[1] == s and r[0] == c)
    if kind == "at_least_one":
        return f"there is a {c} {s} in at least one image.", lambda l, r: (l == (c, s)) or (r == (c, s))
    raise ValueError(f"unknown statement template {kind!r}; expected one of {TEMPLATES}")


def to_nlvr2(attributes: dict[int, tuple[str, str]], split: str, n_statements: int, pairs_per_label: int = 2,
             seed: int = 0, templates: Sequence[str] = TEMPLATES, colors: Sequence[str] = COLORS,
             shapes: Sequence[str] = SHAPES, max_tries: int = 20000) -> list[dict[str, Any]]:
    """NLVR2 json entries (LXMERT's format: identifier, img0, img1, label 0/1, sent): each statement is paired with
    ``pairs_per_label`` image pairs that make it true and as many that make it false (balanced labels, and the
    statement alone tells nothing). Identifiers ``{split}-{statement}-{pair}-0``: the pairs of one statement form an
    NLVR2 consistency group. Image ids "{split}_{n}" (the demo feature store's). ``templates`` / ``colors`` /
    ``shapes`` restrict the statements (tests use one easy family)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = sorted(attributes)
    out: list[dict[str, Any]] = []
    n = 0
    while n < n_statements:
        kind = templates[int(rng.integers(len(templates)))]
        sent, truth = _statement(kind, colors[rng.integers(len(colors))], shapes[rng.integers(len(shapes))])
        found: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
        for _ in range(max_tries):
            a, b = (int(x) for x in rng.choice(images, 2, replace=False))
            want = truth(attributes[a], attributes[b])
            if len(found[want]) < pairs_per_label:
                found[want].append((a, b))
            if all(len(v) == pairs_per_label for v in found.values()):
                break
        else:
            continue  # a statement these images can hardly make true (or false): draw another
        pairs = [(p, True) for p in found[True]] + [(p, False) for p in found[False]]
        for p, j in enumerate(rng.permutation(len(pairs))):
            (a, b), label = pairs[j]
            ident = f"{split}-{n}-{p}-0"
            out.append({"identifier": ident, "img0": f"{split}_{a}", "img1": f"{split}_{b}", "label": int(label),
                        "sent": sent, "uid": f"nlvr2_{ident}"})
        n += 1
    return out
