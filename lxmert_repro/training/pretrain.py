"""LXMERT pretraining (MLM + ITM + masked objects + image QA) on the shared Accelerate loop.

Per-task switches and weights are the objective config (``objectives.task_*``, ``objectives.*_loss_weight``;
configs/objectives), apart from the architecture (``model``);
the QA schedule (``pretrain.qa_start_epoch``: 0 = public code, 10 = the paper's 10 + 10) is applied by
the dataset, which only samples QA targets from that epoch on. Returns the run's metrics.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from omegaconf import DictConfig

from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.training.checkpointing import TrainerState
from lxmert_repro.training.loop import Callback, Trainer

log = logging.getLogger(__name__)

PRETRAIN_TASKS = ("mlm", "itm", "obj", "attr", "feat", "qa")


def pretrain_loss(model: torch.nn.Module, batch: LxmertBatch, state: TrainerState) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and each task's term (as it enters the total)."""
    out = model(**batch.model_inputs(), **batch.pretrain_targets())
    if out.loss is None:
        raise RuntimeError("the pretraining model returned no loss: every task is switched off (model.task_*)")
    return out.loss, {k: float(v.detach().float().item()) for k, v in out.losses.items()}


def make_pretrain_eval(trainer: Trainer, loader: Any) -> Callable[[torch.nn.Module, TrainerState], dict[str, float]]:
    """Validation: example-weighted mean of each task's loss and of the total, over all processes."""
    acc = trainer.accelerator

    def evaluate(model: torch.nn.Module, state: TrainerState) -> dict[str, float]:
        names = ("loss",) + PRETRAIN_TASKS
        sums = torch.zeros(len(names), dtype=torch.float64, device=acc.device)
        counts = torch.zeros(len(names), dtype=torch.float64, device=acc.device)
        for batch in loader:
            out = model(**batch.model_inputs(), **batch.pretrain_targets())
            bs = batch.batch_size
            values = {"loss": out.loss, **out.losses}
            for i, n in enumerate(names):
                if values.get(n) is not None:
                    sums[i] += float(values[n].detach().float()) * bs
                    counts[i] += bs
        sums = acc.reduce(sums, reduction="sum")
        counts = acc.reduce(counts, reduction="sum")
        return {f"val/{n}": float(sums[i] / counts[i]) for i, n in enumerate(names) if counts[i] > 0}

    return evaluate


def train_pretrain(cfg: DictConfig, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> dict[str, float]:
    """Pretrain from the composed config; checkpoints and ``metrics.jsonl`` go to the run dir.

    Returns the final metrics (``train/*``, ``val/*``, ``best/val/loss``, ``global_step``).
    """
    from lxmert_repro.training.data_setup import build_pretrain_data
    from lxmert_repro.training.models import build_pretrain_model, save_run_model

    trainer = Trainer(cfg, callbacks)
    try:
        data = build_pretrain_data(cfg, trainer.accelerator)
        model = build_pretrain_model(cfg, data)
        if trainer.is_main:
            log.info("pretraining %s parameters on %d pairs (%d val)", f"{sum(p.numel() for p in model.parameters()):,}",
                     len(data.train), len(data.val) if data.val is not None else 0)
        eval_fn = None
        if data.val is not None:
            eval_fn = make_pretrain_eval(trainer, trainer.eval_loader(data.val, data.collator))
        answers = data.answers

        def save(m: torch.nn.Module, out_dir: Any) -> None:
            save_run_model(m, out_dir, answers=answers, tokenizer_dir=data.tokenizer_dir)

        result = trainer.fit(
            model, data.train, data.collator, pretrain_loss, eval_fn,
            select_metric="val/loss" if eval_fn is not None else None, select_mode="min", save_model_fn=save,
        )
        return result.metrics
    finally:
        trainer.end()
