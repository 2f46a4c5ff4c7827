"""easy-VQA (PyPI ``easy-vqa``): ``questions.json`` = ``[[question, answer, image_id], ...]``, images/{id}.png.

The data ships inside the installed package; its directory is found from the package itself.
"""
from __future__ import annotations

import os
from pathlib import Path

from lxmert_repro.data.formats.example import Example, load_json

SPLITS = ("train", "test")


def easy_vqa_root() -> Path:
    """The ``data`` directory of the installed easy_vqa package."""
    try:
        import easy_vqa
    except ImportError:
        raise ImportError("easy-VQA data needs the 'easy-vqa' package (pip install easy-vqa)") from None
    root = Path(easy_vqa.__file__).resolve().parent / "data"
    if not root.is_dir():
        raise FileNotFoundError(f"easy_vqa is installed but has no data directory at '{root}'")
    return root


def easy_vqa_image_dir(split: str, root: str | os.PathLike | None = None) -> Path:
    return Path(root or easy_vqa_root()) / split / "images"


def read_easy_vqa(split: str = "train", root: str | os.PathLike | None = None,
                  image_id_format: str = "{image_id}") -> list[Example]:
    """One example per question; the single answer gets soft score 1. ``question_id`` is the question's
    position in the split's file; ``answer_type`` is "yes/no" or "other", ``question_type`` the
    question's first three words (as VQA's types are question prefixes)."""
    if split not in SPLITS:
        raise ValueError(f"easy-VQA split must be one of {SPLITS}, got '{split}'")
    path = Path(root or easy_vqa_root()) / split / "questions.json"
    rows = load_json(path, "easy-VQA questions")
    if not isinstance(rows, list):
        raise ValueError(f"easy-VQA questions '{path}': expected a list of [question, answer, image_id]")
    out = []
    for i, row in enumerate(rows):
        if not (isinstance(row, list) and len(row) == 3 and isinstance(row[0], str) and isinstance(row[1], str)):
            raise ValueError(f"easy-VQA questions '{path}', entry {i}: expected [question, answer, image_id], got {row!r}")
        q, a, iid = row
        out.append(Example(image_id_format.format(image_id=int(iid), split=split), q, "easy_vqa", i, {a: 1.0}, a,
                           " ".join(q.lower().rstrip("?").split()[:3]), "yes/no" if a in ("yes", "no") else "other"))
    return out
