"""VQA (airsplay/lxmert src/tasks/vqa*.py): soft targets, BCE x num_answers, the answer head on the pooled output,
the official VQA accuracy, the evaluation server's prediction file. One image per example."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lxmert_repro.tasks.base import Task, TaskSplits


def accuracy_metrics(evaluator: Any, predictions: dict[int, str], prefix: str) -> dict[str, float]:
    """``{prefix}/accuracy`` and one ``{prefix}/accuracy_<answer type>`` per type ('yes/no' -> 'yes_no')."""
    res = evaluator.evaluate(predictions, list(predictions), allow_missing=False)
    metrics = {f"{prefix}/accuracy": float(res["overall"])}
    for k, v in (res.get("per_answer_type") or {}).items():
        metrics[f"{prefix}/accuracy_{k.replace('/', '_')}"] = float(v)
    return metrics


class AnswerHeadTask(Task):
    """Tasks answered by LxmertForVQA's head over an answer vocabulary (VQA, GQA): shared model and batches."""

    def loss(self, model: torch.nn.Module, batch: Any, state: Any) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(**batch.model_inputs(), vqa_targets=batch.vqa_targets)
        return out.loss, {}

    def load_model(self, path: str | os.PathLike) -> torch.nn.Module:
        from lxmert_repro.training.models import load_vqa_model

        return load_vqa_model(path)

    def eval_dataset(
        self, records: Any, store: Any, answers: Any, tokenizer: Any, max_boxes: int | None
    ) -> tuple[Any, Any]:
        from lxmert_repro.data.vqa_dataset import VQACollator, VQADataset

        return (
            VQADataset(records, store, answers, max_boxes=max_boxes),
            VQACollator(len(answers), pad_token_id=tokenizer.pad_token_id, max_boxes=max_boxes),
        )

    def target_score(self, batch: Any, pred: torch.Tensor) -> torch.Tensor | None:
        if batch.vqa_targets is None:
            return None
        return batch.vqa_targets.gather(1, pred[:, None]).squeeze(1)  # (B,) target score of the argmax

    def forward_flops(self, model: torch.nn.Module) -> Callable[[Any], int] | None:
        from lxmert_repro.modeling import LxmertConfig
        from lxmert_repro.modeling.flops import vqa_forward_flops

        config, num_answers = getattr(model, "config", None), getattr(model, "num_answers", None)
        if not isinstance(config, LxmertConfig) or num_answers is None:
            return None
        return lambda batch: vqa_forward_flops(
            config, batch.input_ids.shape[0], batch.input_ids.shape[1], batch.visual_feats.shape[1], num_answers
        )


@dataclass
class VQASplits(TaskSplits):
    """``data.vqa``: the official VQA v2 annotations json of a split -> the official accuracy instead of the
    soft score."""

    val_annotations: str | None = None
    test_annotations: str | None = None


class VQATask(AnswerHeadTask):
    name = "vqa"
    splits_schema = VQASplits

    def build_data(self, cfg: DictConfig, accelerator: Any = None) -> Any:
        from lxmert_repro.training.data_setup import build_vqa_data

        return build_vqa_data(cfg, accelerator)

    def build_model(self, cfg: DictConfig, data: Any) -> torch.nn.Module:
        from lxmert_repro.training.models import build_vqa_model

        return build_vqa_model(cfg, data)

    def metrics(self, data: Any, split: str, predictions: dict[int, str], score: float | None) -> dict[str, float]:
        """The official VQA accuracy when annotations are configured (data.vqa.<split>_annotations), else LXMERT's
        soft-score accuracy (equal to plain accuracy on single-answer data like easy-VQA)."""
        evaluator = getattr(data, f"{split}_evaluator", None)
        out: dict[str, float] = {}
        if split == "val" and score is not None:
            out["val/soft_accuracy"] = score
        if evaluator is not None:
            out.update(accuracy_metrics(evaluator, predictions, split))
        elif score is not None:
            out[f"{split}/accuracy"] = score
        return out

    def write_predictions(self, path: str | os.PathLike, predictions: dict[int, str], records: Any) -> None:
        from lxmert_repro.evaluation.predictions import write_predictions

        write_predictions(path, predictions)

    def score_files(self, cfg: DictConfig) -> dict[str, Any]:
        """Official VQA accuracy of ``predictions`` against ``annotations`` (+ optional ``questions``)."""
        from lxmert_repro.evaluation.vqa_metric import score_prediction_file

        preds = existing(cfg.get("predictions"), "predictions")
        ann = existing(cfg.get("annotations"), "annotations")
        questions = existing(cfg.questions, "questions") if cfg.get("questions") else None
        return score_prediction_file(preds, questions, ann, allow_missing=bool(cfg.get("allow_missing", False)))

    def evaluate_with_annotations(self, cfg: DictConfig, predictions: dict[int, str], records: Any) -> dict[str, Any]:
        """lxmert-evaluate checkpoint=... annotations=...: the official metric of the model's predictions."""
        from lxmert_repro.evaluation.vqa_metric import VQAEvaluator

        if not cfg.get("annotations"):
            return {}
        res = VQAEvaluator.from_file(existing(cfg.annotations, "annotations")).evaluate(predictions, list(predictions))
        res.pop("per_question", None)
        return res


def existing(value: Any, key: str) -> Path:
    """``value`` as an existing path; errors name the config key."""
    if value in (None, ""):
        raise ValueError(f"{key} is not set")
    p = Path(str(value))
    if not p.exists():
        raise FileNotFoundError(f"{key}={p}: no such file or directory")
    return p
