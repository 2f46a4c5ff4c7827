"""LXMERT pretraining (MLM + ITM + masked objects + image QA) on the shared Accelerate loop.

Per-task switches and weights are the objective config (``objectives.task_*``, ``objectives.*_loss_weight``;
lxmert_repro/configs/objectives), apart from the architecture (``model``);
the QA schedule (``pretrain.qa_start_epoch``: 0 = public code, 10 = the paper's 10 + 10) is applied by
the dataset, which only samples QA targets from that epoch on. Returns the run's metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from omegaconf import DictConfig

from lxmert_repro.config_schema import check
from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.modeling import LxmertConfig
from lxmert_repro.modeling.flops import pretraining_forward_flops
from lxmert_repro.training.checkpointing import TrainerState
from lxmert_repro.training.loop import Callback, Trainer

log = logging.getLogger(__name__)

PRETRAIN_TASKS = ("mlm", "itm", "obj", "attr", "feat", "qa")


@dataclass
class PretrainTaskConfig:
    """Schema of ``pretrain`` (configs/pretrain.yaml): the task mixture."""

    mlm_prob: float = 0.15
    obj_mask_prob: float = 0.15
    obj_mask_split: list[float] = field(default_factory=lambda: [0.8, 0.1, 0.1])  # zeroed / swapped / unchanged
    itm_prob: float = 0.5
    qa: bool = True
    qa_start_epoch: int = 0
    init_from: str | None = None

    def __post_init__(self) -> None:
        split = list(self.obj_mask_split)
        check(
            len(split) == 3 and all(0 <= p <= 1 for p in split) and abs(sum(split) - 1) < 1e-6,
            "pretrain.obj_mask_split",
            split,
            "3 probabilities (zeroed, swapped, unchanged) summing to 1",
        )
        for key in ("mlm_prob", "obj_mask_prob", "itm_prob"):
            check(0 <= getattr(self, key) <= 1, f"pretrain.{key}", getattr(self, key), "a probability in [0, 1]")
        check(self.qa_start_epoch >= 0, "pretrain.qa_start_epoch", self.qa_start_epoch, "an integer >= 0")


def pretrain_loss(
    model: torch.nn.Module, batch: LxmertBatch, state: TrainerState
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Total loss and each task's term (as it enters the total), left on the device for the trainer to sum."""
    out = model(**batch.model_inputs(), **batch.pretrain_targets())
    if out.loss is None:
        raise RuntimeError("the pretraining model returned no loss: every task is switched off (model.task_*)")
    return out.loss, {k: v.detach() for k, v in out.losses.items()}


def pretrain_flops_fn(model: torch.nn.Module) -> Callable[[LxmertBatch], torch.Tensor] | None:
    """Forward FLOPs of a pretraining batch (``modeling.flops``), counted on the device: the sparse heads' rows
    are sums of the batch's masks, read back with the logged losses. None (no model FLOPs / MFU in the logs)
    for an architecture ``modeling.flops`` has no formula for (LXMERT only)."""
    config, objectives = model.config, getattr(model, "objectives", None)
    if not isinstance(config, LxmertConfig):
        return None

    def flops(batch: LxmertBatch) -> torch.Tensor:
        b, t = batch.input_ids.shape
        n = batch.visual_feats.shape[1]
        mlm = (batch.mlm_labels != -100).sum() if batch.mlm_labels is not None else None
        feat = None
        if batch.masked_boxes is not None:
            feat = (batch.masked_boxes.bool() & batch.visual_mask.bool()).sum()
        return torch.as_tensor(
            pretraining_forward_flops(config, b, t, n, mlm_rows=mlm, feat_rows=feat, objectives=objectives)
        )

    return flops


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
        trainer.record_model(model)
        if trainer.is_main:
            log.info(
                "pretraining %s parameters on %d pairs (%d val)",
                f"{model.num_parameters():,}",
                len(data.train),
                len(data.val) if data.val is not None else 0,
            )
        eval_fn = None
        if data.val is not None:
            eval_fn = make_pretrain_eval(trainer, trainer.eval_loader(data.val, data.collator))
        answers = data.answers

        def save(m: torch.nn.Module, out_dir: Any) -> None:
            save_run_model(m, out_dir, answers=answers, tokenizer_dir=data.tokenizer_dir)

        result = trainer.fit(
            model,
            data.train,
            data.collator,
            pretrain_loss,
            eval_fn,
            select_metric="val/loss" if eval_fn is not None else None,
            select_mode="min",
            save_model_fn=save,
            flops_fn=pretrain_flops_fn(model),
        )
        return result.metrics
    finally:
        trainer.end()
