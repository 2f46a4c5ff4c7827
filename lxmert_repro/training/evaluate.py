"""``lxmert-evaluate``: score a prediction file against annotations with the task's official metric (no model), or
evaluate a fine-tuned model dir on a prepared split (and write its prediction file). ``task=`` picks the task."""

from __future__ import annotations

import logging
import os
from typing import Any

from omegaconf import DictConfig

from lxmert_repro.io_utils import atomic_write_json
from lxmert_repro.tasks.base import Task, build_task
from lxmert_repro.tasks.vqa import existing

log = logging.getLogger(__name__)


def evaluate_model(cfg: DictConfig, task: Task) -> dict[str, Any]:
    """Accuracy of the model dir ``cfg.checkpoint`` on the prepared split ``cfg.split`` (features from
    ``cfg.features``), plus the task's official metric when its annotation files are given. Writes the
    prediction file in the task's format."""
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.features.store import FeatureStore
    from lxmert_repro.text.tokenizer import load_tokenizer
    from lxmert_repro.training.data_setup import load_split
    from lxmert_repro.training.loop import make_accelerator, make_loader
    from lxmert_repro.training.models import ANSWERS_FILE, TOKENIZER_DIR

    ckpt = existing(cfg.checkpoint, "checkpoint")
    split = existing(cfg.split, "split")
    store = FeatureStore(str(existing(cfg.features, "features")))
    answers = AnswerVocab.load(existing(ckpt / ANSWERS_FILE, "checkpoint answers file"))
    tok = load_tokenizer(str(existing(ckpt / TOKENIZER_DIR, "checkpoint tokenizer dir")))
    acc, run_dir = make_accelerator(cfg)
    model = task.load_model(ckpt)
    if model.config.visual_feat_dim != store.feat_dim:
        raise ValueError(
            f"checkpoint={ckpt} expects {model.config.visual_feat_dim}-d features, "
            f"features={cfg.features} has {store.feat_dim}-d"
        )
    records = load_split(split)
    ds, collator = task.eval_dataset(records, store, answers, tok, cfg.get("max_boxes"))
    loader, _ = make_loader(
        ds, collator, int(cfg.batch_size), shuffle=False, seed=0, num_workers=int(cfg.get("num_workers", 0))
    )
    model, loader = acc.prepare(model, loader)
    predictions, score = task.predict(acc, model, loader, answers.answers)
    result: dict[str, Any] = {"checkpoint": str(ckpt), "split": str(split), "questions": len(predictions)}
    if score is not None:
        result["soft_accuracy"] = score
    pred_file = run_dir / f"predictions{task.predictions_suffix}"
    if acc.is_main_process:
        task.write_predictions(pred_file, predictions, ds.records)
    result["predictions"] = str(pred_file)
    result.update(task.evaluate_with_annotations(cfg, predictions, ds.records))
    acc.end_training()
    return result


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Dispatch on what is given; write ``eval_results.json`` into the run dir."""
    from lxmert_repro.training.loop import output_dir_from_cfg

    task = build_task(cfg)
    if cfg.get("checkpoint"):
        result = evaluate_model(cfg, task)
    elif cfg.get("predictions"):
        result = task.score_files(cfg)
    else:
        raise ValueError(
            "lxmert-evaluate: give predictions=FILE and the task's annotation files (score a prediction "
            "file) or checkpoint=MODEL_DIR split=PREPARED_SPLIT features=STORE (evaluate a model)"
        )
    try:
        out = output_dir_from_cfg(cfg)
    except ValueError:
        out = None
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(out / "eval_results.json", result)
    return result
