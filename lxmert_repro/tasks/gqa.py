"""GQA as airsplay/lxmert src/tasks/gqa*.py fine-tunes it: VQA's answer head on the pooled output over the
training answers, one-hot targets, BCE x num_answers; init from the pretrained model including its QA head
(answers matched after LXMERT's answer conversion); exact-match accuracy each epoch, the official GQA
evaluation when the split's official questions file is configured, and the submission file
``[{"questionId", "prediction"}]``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from lxmert_repro.tasks.base import TaskSplits, row_uids
from lxmert_repro.tasks.vqa import AnswerHeadTask, existing


@dataclass
class GQASplits(TaskSplits):
    """``data.gqa``: a split's official questions json (and choices json) -> the official GQA figures."""

    val_questions: str | None = None
    val_choices: str | None = None
    test_questions: str | None = None
    test_choices: str | None = None


class GQATask(AnswerHeadTask):
    name = "gqa"
    splits_schema = GQASplits

    def __init__(self, name: str | None = None, consistency: bool = False) -> None:
        super().__init__(name)
        self.consistency = consistency  # also score consistency (needs the questions file with entailed questions)

    def build_data(self, cfg: DictConfig, accelerator: Any = None) -> Any:
        from lxmert_repro.training.data_setup import build_vqa_data

        data = build_vqa_data(cfg, accelerator, key=self.name, row_keys=True, vqa_evaluators=False)
        from lxmert_repro.evaluation.gqa_metric import GQAEvaluator

        for split in ("val", "test"):  # the official evaluation of a split, when its questions file is given
            q = (cfg.data.get(self.name) or {}).get(f"{split}_questions")
            c = (cfg.data.get(self.name) or {}).get(f"{split}_choices")
            ev = None
            if q:
                ev = GQAEvaluator.from_files(
                    existing(q, f"data.{self.name}.{split}_questions"),
                    existing(c, f"data.{self.name}.{split}_choices") if c else None,
                )
            setattr(data, f"{split}_evaluator", ev)
        return data

    def build_model(self, cfg: DictConfig, data: Any) -> torch.nn.Module:
        from lxmert_repro.data.answer_normalization import lxmert_convert_answer
        from lxmert_repro.training.models import build_vqa_model

        return build_vqa_model(cfg, data, match=lxmert_convert_answer)

    def _by_uid(self, predictions: dict[int, str], records: Any) -> dict[str, str]:
        uids = row_uids(records)
        return {uids[r]: a for r, a in sorted(predictions.items())}

    def metrics(self, data: Any, split: str, predictions: dict[int, str], score: float | None) -> dict[str, float]:
        """Exact-match accuracy from the prepared labels; with the split's official questions file, the official
        figures instead (``<split>/accuracy``, ``/binary``, ``/open``, ``/validity``, ...)."""
        out: dict[str, float] = {}
        ev = getattr(data, f"{split}_evaluator", None)
        if ev is not None:
            res = ev.evaluate(self._by_uid(predictions, getattr(data, split).records), consistency=self.consistency)
            out.update({f"{split}/{k}": float(v) for k, v in res.items() if isinstance(v, (int, float))})
        elif score is not None:
            out[f"{split}/accuracy"] = score
        return out

    def write_predictions(self, path: str | os.PathLike, predictions: dict[int, str], records: Any) -> None:
        from lxmert_repro.evaluation.gqa_metric import write_gqa_predictions

        write_gqa_predictions(path, self._by_uid(predictions, records))

    def score_files(self, cfg: DictConfig) -> dict[str, Any]:
        """lxmert-evaluate task=gqa predictions=P questions=Q [choices=C] [consistency=true]."""
        from lxmert_repro.evaluation.gqa_metric import GQAEvaluator, read_gqa_predictions

        preds = read_gqa_predictions(existing(cfg.get("predictions"), "predictions"))
        ev = GQAEvaluator.from_files(
            existing(cfg.get("questions"), "questions"),
            existing(cfg.choices, "choices") if cfg.get("choices") else None,
        )
        return ev.evaluate(preds, consistency=bool(cfg.get("consistency")) or self.consistency)

    def evaluate_with_annotations(self, cfg: DictConfig, predictions: dict[int, str], records: Any) -> dict[str, Any]:
        from lxmert_repro.evaluation.gqa_metric import GQAEvaluator

        if not cfg.get("questions"):
            return {}
        ev = GQAEvaluator.from_files(
            existing(cfg.questions, "questions"), existing(cfg.choices, "choices") if cfg.get("choices") else None
        )
        return ev.evaluate(self._by_uid(predictions, records), consistency=bool(cfg.get("consistency")))
