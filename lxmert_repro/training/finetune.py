"""VQA fine-tuning: from a pretraining checkpoint (ours or converted), the answer head mapped by answer
strings, BCE x num_answers on soft targets (spec section 3), accuracy each epoch, the best kept, and
the evaluation-server prediction file written for the test split.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from omegaconf import DictConfig

from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.modeling import LxmertConfig
from lxmert_repro.modeling.flops import vqa_forward_flops
from lxmert_repro.training.checkpointing import TrainerState
from lxmert_repro.training.loop import Callback, Trainer

log = logging.getLogger(__name__)


def vqa_loss(model: torch.nn.Module, batch: LxmertBatch, state: TrainerState) -> tuple[torch.Tensor, dict[str, float]]:
    out = model(**batch.model_inputs(), vqa_targets=batch.vqa_targets)
    return out.loss, {}


def vqa_flops_fn(config: LxmertConfig, num_answers: int) -> Callable[[LxmertBatch], int]:
    """Forward FLOPs of a VQA batch (``modeling.flops``): known from its shape."""
    return lambda batch: vqa_forward_flops(config, batch.input_ids.shape[0], batch.input_ids.shape[1],
                                           batch.visual_feats.shape[1], num_answers)


@torch.no_grad()
def predict_answers(accelerator: Any, model: torch.nn.Module, loader: Any, answers: Sequence[str]) -> tuple[dict[int, str], float | None]:
    """Argmax answer per question over a prepared loader, gathered from every process (duplicates of
    the last uneven batch dropped). Returns ({question_id: answer}, soft-score accuracy in % or None)."""
    qids_all: list[torch.Tensor] = []
    preds_all: list[torch.Tensor] = []
    scores_all: list[torch.Tensor] = []
    was_training = model.training
    model.eval()
    for batch in loader:
        logits = model(**batch.model_inputs()).logits  # (B, A)
        pred = logits.argmax(dim=-1)  # (B,)
        if batch.question_ids is None:
            raise ValueError("the evaluation batch has no question_ids (VQACollator must provide them)")
        qids_all.append(accelerator.gather_for_metrics(batch.question_ids.to(pred.device)).cpu())
        preds_all.append(accelerator.gather_for_metrics(pred).cpu())
        if batch.vqa_targets is not None:
            score = batch.vqa_targets.gather(1, pred[:, None]).squeeze(1).float()  # (B,) soft score of the argmax
            scores_all.append(accelerator.gather_for_metrics(score).cpu())
    model.train(was_training)
    qids = torch.cat(qids_all).tolist() if qids_all else []
    preds = torch.cat(preds_all).tolist() if preds_all else []
    predictions = {int(q): answers[p] for q, p in zip(qids, preds)}
    soft = None
    if scores_all:
        s = torch.cat(scores_all)
        soft = float(s.mean() * 100.0) if s.numel() else None
    return predictions, soft


def accuracy_metrics(evaluator: Any, predictions: dict[int, str], prefix: str) -> dict[str, float]:
    """``{prefix}/accuracy`` and one ``{prefix}/accuracy_<answer type>`` per type ('yes/no' -> 'yes_no')."""
    res = evaluator.evaluate(predictions, list(predictions), allow_missing=False)
    metrics = {f"{prefix}/accuracy": float(res["overall"])}
    for k, v in (res.get("per_answer_type") or {}).items():
        metrics[f"{prefix}/accuracy_{k.replace('/', '_')}"] = float(v)
    return metrics


def make_vqa_eval(trainer: Trainer, loader: Any, answers: Sequence[str], evaluator: Any = None,
                  prefix: str = "val") -> Callable[[torch.nn.Module, TrainerState], dict[str, float]]:
    """Per-epoch evaluation: the official VQA accuracy when annotations are given (``evaluator``),
    else LXMERT's soft-score accuracy (equal to plain accuracy on single-answer data like easy-VQA)."""

    def evaluate(model: torch.nn.Module, state: TrainerState) -> dict[str, float]:
        predictions, soft = predict_answers(trainer.accelerator, model, loader, answers)
        metrics: dict[str, float] = {}
        if soft is not None:
            metrics[f"{prefix}/soft_accuracy"] = soft
        if evaluator is not None:
            metrics.update(accuracy_metrics(evaluator, predictions, prefix))
        elif soft is not None:
            metrics[f"{prefix}/accuracy"] = soft
        return metrics

    return evaluate


def train_vqa(cfg: DictConfig, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> dict[str, float]:
    """Fine-tune on VQA from the composed config. Returns the final metrics (``val/accuracy``,
    ``best/val/accuracy``, ``test/accuracy`` when the test split has labels, ...)."""
    from lxmert_repro.evaluation.predictions import write_predictions
    from lxmert_repro.training.data_setup import build_vqa_data
    from lxmert_repro.training.models import build_vqa_model, load_vqa_model, save_run_model

    trainer = Trainer(cfg, callbacks)
    acc = trainer.accelerator
    try:
        data = build_vqa_data(cfg, acc)
        model = build_vqa_model(cfg, data)
        answers = list(data.answers.answers)
        eval_fn = None
        if data.val is not None:
            eval_fn = make_vqa_eval(trainer, trainer.eval_loader(data.val, data.collator), answers, data.val_evaluator)

        def save(m: torch.nn.Module, out_dir: Path) -> None:
            save_run_model(m, out_dir, answers=data.answers, tokenizer_dir=data.tokenizer_dir)

        result = trainer.fit(
            model, data.train, data.collator, vqa_loss, eval_fn,
            select_metric="val/accuracy" if eval_fn is not None else None, select_mode="max", save_model_fn=save,
            flops_fn=vqa_flops_fn(model.config, model.num_answers),
        )
        metrics = dict(result.metrics)
        if data.test is not None:
            best_dir = trainer.run_dir / "model_best"
            final = trainer.model
            if best_dir.is_dir():
                final = acc.prepare(load_vqa_model(best_dir))
            test_loader = trainer.eval_loader(data.test, data.collator)
            predictions, soft = predict_answers(acc, final, test_loader, answers)
            if trainer.is_main:
                write_predictions(trainer.run_dir / "predictions_test.json", predictions)
            if data.test_evaluator is not None:
                metrics.update(accuracy_metrics(data.test_evaluator, predictions, "test"))
            elif soft is not None:
                metrics["test/accuracy"] = soft
            trainer.logger.log({k: v for k, v in metrics.items() if k.startswith("test/")}, step=result.state.global_step)
            if trainer.is_main:
                from lxmert_repro.io_utils import atomic_write_json

                atomic_write_json(trainer.run_dir / "final_metrics.json", metrics)
        return metrics
    finally:
        trainer.end()
