"""What a downstream task is: the one unit ``task=<name>`` selects in lxmert-finetune / -evaluate / -predict.

A task is a plain class instantiated from ``configs/task/<name>.yaml`` (Hydra ``_target_``); its prepared split
paths are ``data.<name>.*`` (``configs/task_splits/<name>.yaml``, checked against its ``splits_schema``). It
supplies, for the generic fine-tuning loop (training/finetune.py) and the evaluation app (training/evaluate.py):

    build_data(cfg)                -> data with .train/.val/.test datasets, .collator, .answers, .tokenizer_dir
    build_model(cfg, data)         -> the model (from finetune.init_from, or fresh)
    load_model(path)               -> a fine-tuned model dir of this task's architecture
    loss(model, batch, state)      -> (loss, {part: value})
    eval_dataset(records, store, answers, tokenizer, max_boxes) -> (dataset, collator) for lxmert-evaluate
    target_score(batch, pred)      -> (B,) 1/0 (or VQA's soft score) of each argmax prediction, None when unlabelled
    metrics(data, split, predictions, score) -> {"<split>/accuracy": ..., ...}
    write_predictions(path, predictions, records)   the task's submission format
    score_files(cfg)               -> metrics of a prediction file against annotations (no model)
    evaluate_with_annotations(cfg, predictions, records) -> the official metric of a model's predictions

Predictions are ``{row key: answer string}``; the row key is what the collator put in ``question_ids``
(VQA: the question id; GQA / NLVR2: the row in the split, whose string id is the split's ``uid`` column).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig

log = logging.getLogger(__name__)


@dataclass
class TaskSplits:
    """Schema of ``data.<task name>``: the prepared splits every task reads. A task whose evaluation also reads
    official files (VQA's annotations, GQA's questions and choices) extends it and names it ``splits_schema``."""

    train: str = MISSING
    val: str | None = None
    test: str | None = None
    answers: str = MISSING


class Task:
    """Base of every task: the generic parts (argmax prediction, gathering); subclasses fill in the rest."""

    name: str = ""
    splits_schema: type = TaskSplits  # what data.<name> may hold (lxmert-finetune validates it before any work)
    predictions_suffix: str = ".json"  # the run dir gets predictions_test<suffix> (fine-tuning), predictions<suffix>

    def __init__(self, name: str | None = None) -> None:
        if name:
            self.name = name

    # --- to be provided by each task --------------------------------------------------------------------
    def build_data(self, cfg: DictConfig, accelerator: Any = None) -> Any:
        raise NotImplementedError

    def build_model(self, cfg: DictConfig, data: Any) -> torch.nn.Module:
        raise NotImplementedError

    def load_model(self, path: Any) -> torch.nn.Module:
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: Any, state: Any) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def eval_dataset(
        self, records: Any, store: Any, answers: Any, tokenizer: Any, max_boxes: int | None
    ) -> tuple[Any, Any]:
        raise NotImplementedError

    def target_score(self, batch: Any, pred: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def forward_flops(self, model: torch.nn.Module) -> Callable[[Any], int] | None:
        """Model FLOPs of one batch's forward (for the trainer's throughput and MFU), or None when the task's
        model has no formula in ``modeling.flops`` (the logs then leave model FLOPs and MFU out)."""
        return None

    def metrics(self, data: Any, split: str, predictions: dict[int, str], score: float | None) -> dict[str, float]:
        raise NotImplementedError

    def write_predictions(self, path: Any, predictions: dict[int, str], records: Any) -> None:
        raise NotImplementedError

    def score_files(self, cfg: DictConfig) -> dict[str, Any]:
        raise NotImplementedError

    def evaluate_with_annotations(self, cfg: DictConfig, predictions: dict[int, str], records: Any) -> dict[str, Any]:
        """lxmert-evaluate checkpoint=...: the official metric of the model's predictions when the config names the
        task's annotation files; {} otherwise."""
        return {}

    # --- shared ------------------------------------------------------------------------------------------
    def logits(self, model: torch.nn.Module, batch: Any) -> torch.Tensor:
        return model(**batch.model_inputs()).logits

    @torch.no_grad()
    def predict(
        self, accelerator: Any, model: torch.nn.Module, loader: Any, answers: Sequence[str]
    ) -> tuple[dict[int, str], float | None]:
        """Argmax answer per row over a prepared loader, gathered from every process (duplicates of the last
        uneven batch dropped). Returns ({row key: answer}, mean ``target_score`` in % or None when unlabelled)."""
        return predict_argmax(accelerator, model, loader, answers, self.logits, self.target_score)


def predict_argmax(
    accelerator: Any,
    model: torch.nn.Module,
    loader: Any,
    answers: Sequence[str],
    logits_fn: Callable[[torch.nn.Module, Any], torch.Tensor],
    score_fn: Callable[[Any, torch.Tensor], torch.Tensor | None],
) -> tuple[dict[int, str], float | None]:
    keys_all: list[torch.Tensor] = []
    preds_all: list[torch.Tensor] = []
    scores_all: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    for batch in loader:
        pred = logits_fn(model, batch).argmax(dim=-1)  # (B,)
        if batch.question_ids is None:
            raise ValueError("the evaluation batch has no question_ids (the task's collator must provide them)")
        keys_all.append(accelerator.gather_for_metrics(batch.question_ids.to(pred.device)).cpu())
        preds_all.append(accelerator.gather_for_metrics(pred).cpu())
        score = score_fn(batch, pred)
        if score is not None:
            scores_all.append(accelerator.gather_for_metrics(score.float()).cpu())
    model.train(was_training)
    keys = torch.cat(keys_all).tolist() if keys_all else []
    preds = torch.cat(preds_all).tolist() if preds_all else []
    predictions = {int(q): answers[p] for q, p in zip(keys, preds)}
    mean = None
    if scores_all:
        s = torch.cat(scores_all)
        mean = float(s.mean() * 100.0) if s.numel() else None
    return predictions, mean


def build_task(cfg: DictConfig) -> Task:
    """``cfg.task`` instantiated (configs/task/<name>.yaml)."""
    node = cfg.get("task")
    if node is None or "_target_" not in node:
        raise ValueError("the config has no task (task=vqa | gqa | nlvr2 selects one: configs/task/)")
    task = instantiate(node, _convert_="all")
    if not isinstance(task, Task):
        raise TypeError(f"task._target_={node._target_} is not a lxmert_repro.tasks.Task")
    return task


def row_uids(records: Any) -> list[str]:
    """The ``uid`` column of a prepared split (a task's string ids), in row order."""
    from lxmert_repro.data.records import RecordTable

    table = records if isinstance(records, RecordTable) else RecordTable(records)
    if "uid" not in table.column_names:
        raise ValueError("the prepared split has no 'uid' column: prepare it again with this version's lxmert-prepare")
    return [str(u) for u in table.column("uid")]
