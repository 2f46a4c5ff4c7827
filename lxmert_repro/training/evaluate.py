"""``lxmert-evaluate``: score a server-format prediction file against official VQA v2 annotations (no
model), or evaluate a fine-tuned model dir on a prepared split (and write its prediction file)."""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from lxmert_repro.io_utils import atomic_write_json

log = logging.getLogger(__name__)


def _existing(value: Any, key: str) -> Path:
    if value in (None, ""):
        raise ValueError(f"{key} is not set")
    p = Path(str(value))
    if not p.exists():
        raise FileNotFoundError(f"{key}={p}: no such file or directory")
    return p


def evaluate_prediction_file(cfg: DictConfig) -> dict[str, Any]:
    """Official VQA accuracy of ``cfg.predictions`` against ``cfg.annotations`` (+ optional ``cfg.questions``)."""
    from lxmert_repro.evaluation.vqa_metric import score_prediction_file

    preds = _existing(cfg.predictions, "predictions")
    ann = _existing(cfg.annotations, "annotations")
    questions = _existing(cfg.questions, "questions") if cfg.get("questions") else None
    return score_prediction_file(preds, questions, ann, allow_missing=bool(cfg.get("allow_missing", False)))


def evaluate_model(cfg: DictConfig) -> dict[str, Any]:
    """Accuracy of the model dir ``cfg.checkpoint`` on the prepared split ``cfg.split`` (features from
    ``cfg.features``); official metric when ``cfg.annotations`` is given. Writes the prediction file."""
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.data.vqa_dataset import VQACollator, VQADataset
    from lxmert_repro.evaluation.predictions import write_predictions
    from lxmert_repro.evaluation.vqa_metric import VQAEvaluator
    from lxmert_repro.features.store import FeatureStore
    from lxmert_repro.text.tokenizer import load_tokenizer
    from lxmert_repro.training.data_setup import load_split
    from lxmert_repro.training.finetune import predict_answers
    from lxmert_repro.training.loop import make_accelerator, make_loader
    from lxmert_repro.training.models import ANSWERS_FILE, TOKENIZER_DIR, load_vqa_model

    ckpt = _existing(cfg.checkpoint, "checkpoint")
    split = _existing(cfg.split, "split")
    store = FeatureStore(str(_existing(cfg.features, "features")))
    answers = AnswerVocab.load(_existing(ckpt / ANSWERS_FILE, "checkpoint answers file"))
    tok = load_tokenizer(str(_existing(ckpt / TOKENIZER_DIR, "checkpoint tokenizer dir")))
    acc, run_dir = make_accelerator(cfg)
    model = load_vqa_model(ckpt)
    if model.config.visual_feat_dim != store.feat_dim:
        raise ValueError(f"checkpoint={ckpt} expects {model.config.visual_feat_dim}-d features, "
                         f"features={cfg.features} has {store.feat_dim}-d")
    ds = VQADataset(load_split(split), store, answers, max_boxes=cfg.get("max_boxes"))
    loader, _ = make_loader(ds, VQACollator(len(answers), pad_token_id=tok.pad_token_id, max_boxes=cfg.get("max_boxes")),
                            int(cfg.batch_size), shuffle=False, seed=0, num_workers=int(cfg.get("num_workers", 0)))
    model, loader = acc.prepare(model, loader)
    predictions, soft = predict_answers(acc, model, loader, answers.answers)
    result: dict[str, Any] = {"checkpoint": str(ckpt), "split": str(split), "questions": len(predictions)}
    if soft is not None:
        result["soft_accuracy"] = soft
    if cfg.get("annotations"):
        ev = VQAEvaluator.from_file(_existing(cfg.annotations, "annotations"))
        res = ev.evaluate(predictions, list(predictions))
        res.pop("per_question", None)
        result.update(res)
    pred_file = run_dir / "predictions.json"
    if acc.is_main_process:
        write_predictions(pred_file, predictions)
    result["predictions"] = str(pred_file)
    acc.end_training()
    return result


def run_evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Dispatch on what is given; write ``eval_results.json`` into the run dir."""
    from lxmert_repro.training.loop import output_dir_from_cfg

    if cfg.get("checkpoint"):
        result = evaluate_model(cfg)
    elif cfg.get("predictions"):
        result = evaluate_prediction_file(cfg)
    else:
        raise ValueError("lxmert-evaluate: give predictions=FILE annotations=FILE (score a prediction file) "
                         "or checkpoint=MODEL_DIR split=PREPARED_SPLIT features=STORE (evaluate a model)")
    try:
        out = output_dir_from_cfg(cfg)
    except ValueError:
        out = None
    if out is not None and int(os.environ.get("RANK", "0")) == 0:
        atomic_write_json(out / "eval_results.json", result)
    return result
