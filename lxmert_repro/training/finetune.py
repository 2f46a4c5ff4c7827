"""Downstream fine-tuning, the same loop for every task (``task=vqa | gqa | nlvr2``, lxmert_repro/tasks/): the task
builds data and model (from a pretraining checkpoint, ours or converted), gives the loss, the per-epoch metrics
(the best epoch is kept in model_best/) and the prediction file written for the test split.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from lxmert_repro.tasks.base import Task, build_task
from lxmert_repro.training.checkpointing import TrainerState
from lxmert_repro.training.loop import Callback, Trainer

log = logging.getLogger(__name__)


@dataclass
class FinetuneTaskConfig:
    """Schema of ``finetune`` (configs/finetune.yaml)."""

    init_from: str | None = None
    pretrain_answers: str | None = None


def make_task_eval(
    task: Task, trainer: Trainer, loader: Any, data: Any, split: str = "val"
) -> Callable[[torch.nn.Module, TrainerState], dict[str, float]]:
    """Per-epoch evaluation: the task's argmax predictions on ``loader`` scored by ``task.metrics``."""
    answers = list(data.answers.answers)

    def evaluate(model: torch.nn.Module, state: TrainerState) -> dict[str, float]:
        predictions, score, speed = timed_predict(task, trainer.accelerator, model, loader, answers, split)
        return {**task.metrics(data, split, predictions, score), **speed}

    return evaluate


def timed_predict(
    task: Task, accelerator: Any, model: torch.nn.Module, loader: Any, answers: list[str], split: str
) -> tuple[dict[int, str], float | None, dict[str, float]]:
    """``task.predict`` and its throughput, ``{split}/samples_per_s`` = rows predicted (all processes) / seconds,
    so that architectures can be compared on evaluation speed as well as on training speed."""
    t0 = time.perf_counter()
    predictions, score = task.predict(accelerator, model, loader, answers)
    seconds = time.perf_counter() - t0  # predict ends with a host read of the gathered predictions: work is done
    return predictions, score, {f"{split}/samples_per_s": len(predictions) / max(seconds, 1e-9)}


def train_task(cfg: DictConfig, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> dict[str, float]:
    """Fine-tune ``cfg.task`` from the composed config. Returns the final metrics (``val/accuracy``,
    ``best/val/accuracy``, ``test/accuracy`` when the test split has labels, ...)."""
    from lxmert_repro.io_utils import atomic_write_json
    from lxmert_repro.training.models import save_run_model

    task = build_task(cfg)
    trainer = Trainer(cfg, callbacks)
    acc = trainer.accelerator
    try:
        data = task.build_data(cfg, acc)
        model = task.build_model(cfg, data)
        trainer.record_model(model)
        answers = list(data.answers.answers)
        eval_fn = None
        if data.val is not None:
            eval_fn = make_task_eval(task, trainer, trainer.eval_loader(data.val, data.collator), data, "val")

        def save(m: torch.nn.Module, out_dir: Path) -> None:
            save_run_model(m, out_dir, answers=data.answers, tokenizer_dir=data.tokenizer_dir)

        result = trainer.fit(
            model,
            data.train,
            data.collator,
            task.loss,
            eval_fn,
            select_metric="val/accuracy" if eval_fn is not None else None,
            select_mode="max",
            save_model_fn=save,
            flops_fn=task.forward_flops(model),
        )
        metrics = dict(result.metrics)
        if data.test is not None:
            best_dir = trainer.run_dir / "model_best"
            final = trainer.model
            if best_dir.is_dir():
                final = acc.prepare(task.load_model(best_dir))
            test_loader = trainer.eval_loader(data.test, data.collator)
            predictions, score, speed = timed_predict(task, acc, final, test_loader, answers, "test")
            if trainer.is_main:
                task.write_predictions(
                    trainer.run_dir / f"predictions_test{task.predictions_suffix}", predictions, data.test.records
                )
            metrics.update(task.metrics(data, "test", predictions, score), **speed)
            trainer.logger.log(
                {k: v for k, v in metrics.items() if k.startswith("test/")}, step=result.state.global_step
            )
            if trainer.is_main:
                atomic_write_json(trainer.run_dir / "final_metrics.json", metrics)
        return metrics
    finally:
        trainer.end()


def train_vqa(cfg: DictConfig, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> dict[str, float]:
    """The name callers used before tasks were plug-ins: fine-tunes whatever ``cfg.task`` is (VQA by default)."""
    return train_task(cfg, callbacks)
