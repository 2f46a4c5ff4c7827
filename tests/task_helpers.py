"""Helpers for the GQA / NLVR2 task tests (no tests here): easy-VQA's first images in a feature store (the training
tests' cheap pixel features), task files written by the project's converters, and prepared splits made by
lxmert-prepare's own ``prepare``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from training_helpers import build_easy_vqa_data


def prepare_task(
    root: Path,
    readers: dict[str, Callable[[], list]],
    answers_list: list[str] | None = None,
    n_train_images: int = 120,
    n_test_images: int = 40,
) -> dict[str, str]:
    """Feature store of the first images, then ``prepare`` on the task's readers (tokenizer trained on train)."""
    from lxmert_repro.data.prepare import prepare
    from lxmert_repro.features.store import FeatureStore
    from lxmert_repro.text.tokenizer import TrainedWordPieceSource

    easy = build_easy_vqa_data(root / "easy", n_train_images=n_train_images, n_test_images=n_test_images)
    out = root / "prepared"
    prepare(
        readers,
        out,
        TrainedWordPieceSource(vocab_size=200),
        kind="vqa",
        answer_normalizer="none",
        feature_store=FeatureStore(easy["features"]),
        answers_list=answers_list,
    )
    return {
        "features": easy["features"],
        "tokenizer_dir": str(out / "tokenizer"),
        "answers": str(out / "answers.json"),
        "train": str(out / "train"),
        "test": str(out / "test"),
    }


def partial(fn: Callable, **kw: Any) -> Callable[[], list]:
    return functools.partial(fn, **kw)
