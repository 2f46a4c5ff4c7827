"""NLVR2 as airsplay/lxmert src/tasks/nlvr2*.py fine-tunes it, for any architecture: the statement is encoded with
each of the two images, the two pooled vectors concatenated (2Hp) into Linear-GeLU-LayerNorm-Linear(2Hp, 2),
cross-entropy; init from the pretrained encoder without answer head; accuracy and consistency (the official
metrics); predictions as CSV ``identifier,True|False``."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from lxmert_repro.data.pair_dataset import FALSE, TRUE
from lxmert_repro.tasks.base import Task, row_uids
from lxmert_repro.tasks.vqa import existing

log = logging.getLogger(__name__)
CLASSES = (FALSE, TRUE)  # class index 1 = the statement is true (the original's label)


@dataclass
class PairTaskData:
    train: Any
    val: Any | None
    test: Any | None
    collator: Any
    answers: Any  # AnswerVocab ["False", "True"], the head's class order
    tokenizer: Any
    tokenizer_dir: Any
    store: Any


def labels_of(records: Any) -> dict[str, str]:
    """{identifier: "True"/"False"} of a prepared split's labelled rows."""
    from lxmert_repro.data.records import RecordTable

    table = records if isinstance(records, RecordTable) else RecordTable(records)
    return {str(u): a[0] for u, a in zip(table.column("uid"), table.column("answers")) if a}


class NLVR2Task(Task):
    name = "nlvr2"
    predictions_suffix = ".csv"
    images_per_example = 2

    def __init__(self, name: str | None = None, blind: bool = False) -> None:
        super().__init__(name)
        self.blind = blind  # image features and boxes zeroed: the text-only baseline

    def build_data(self, cfg: DictConfig, accelerator: Any = None) -> PairTaskData:
        from lxmert_repro.data.answers import AnswerVocab
        from lxmert_repro.data.pair_dataset import PairCollator, PairDataset
        from lxmert_repro.training.data_setup import _common, _fraction, _path, _subset, _text_pad_to, load_split

        tokenizer, tok_dir, store = _common(cfg)
        answers_path = _path(cfg, f"{self.name}.answers")
        answers = AnswerVocab.load(answers_path)
        if tuple(answers.answers) != CLASSES:
            raise ValueError(
                f"data.{self.name}.answers={answers_path}: expected the classes {list(CLASSES)} in this "
                f"order, got {answers.answers[:5]} (prepare with data.answers.list=[False, True])"
            )
        max_boxes, limit = cfg.data.get("max_boxes"), cfg.data.get("limit")
        fraction = float(cfg.data.get("train_fraction") or 1.0)

        def dataset(split: str, required: bool) -> PairDataset | None:
            p = _path(cfg, f"{self.name}.{split}", required=required)
            if p is None:
                return None
            records = _subset(load_split(p), limit)
            if split == "train" and fraction != 1.0:
                records = _fraction(records, fraction, int(cfg.data.get("subset_seed", 0)), p)
            return PairDataset(records, store, self.images_per_example, max_boxes=max_boxes)

        collator = PairCollator(
            pad_token_id=tokenizer.pad_token_id, pad_to=_text_pad_to(cfg), max_boxes=max_boxes, blind=self.blind
        )
        return PairTaskData(
            dataset("train", True),
            dataset("val", False),
            dataset("test", False),
            collator,
            answers,
            tokenizer,
            tok_dir,
            store,
        )

    def build_model(self, cfg: DictConfig, data: Any) -> torch.nn.Module:
        """The architecture's ``nlvr2`` model (``modeling/nlvr2.py::NLVR2Model`` for every architecture here; a config
        whose ``MODEL_CLASSES`` has no ``nlvr2`` entry is refused with a message naming the roles it has)."""
        from lxmert_repro.modeling import build_model
        from lxmert_repro.training.models import _data_overrides, load_init_model, model_config

        init = load_init_model(cfg, data)
        if init is None:
            return build_model(model_config(cfg, **_data_overrides(data)), "nlvr2")
        src, path = init
        if src.ROLE == "nlvr2":
            return src
        if src.ROLE not in ("pretraining", "vqa"):
            raise TypeError(
                f"finetune.init_from={path}: expected a pretraining, VQA or NLVR2 model, got {type(src).__name__}"
            )
        nlvr2_class = src.config.model_class("nlvr2")
        log.info("NLVR2 model: encoder from %s, pair head initialised randomly (as the original)", path)
        return nlvr2_class.from_pretraining(src)

    def load_model(self, path: str | os.PathLike) -> torch.nn.Module:
        from lxmert_repro.modeling import load_model

        model = load_model(str(path))
        if getattr(model, "ROLE", None) != "nlvr2":
            raise TypeError(f"{path}: expected a fine-tuned NLVR2 model, got {type(model).__name__}")
        return model

    def loss(self, model: torch.nn.Module, batch: Any, state: Any) -> tuple[torch.Tensor, dict[str, float]]:
        return model(**batch.model_inputs(), labels=batch.class_labels).loss, {}

    def eval_dataset(
        self, records: Any, store: Any, answers: Any, tokenizer: Any, max_boxes: int | None
    ) -> tuple[Any, Any]:
        from lxmert_repro.data.pair_dataset import PairCollator, PairDataset

        return (
            PairDataset(records, store, self.images_per_example, max_boxes=max_boxes),
            PairCollator(pad_token_id=tokenizer.pad_token_id, max_boxes=max_boxes, blind=self.blind),
        )

    def target_score(self, batch: Any, pred: torch.Tensor) -> torch.Tensor | None:
        return None if batch.class_labels is None else (pred == batch.class_labels).float()

    def _by_uid(self, predictions: dict[int, str], records: Any) -> dict[str, str]:
        uids = row_uids(records)
        return {uids[r]: a for r, a in sorted(predictions.items())}

    def metrics(self, data: Any, split: str, predictions: dict[int, str], score: float | None) -> dict[str, float]:
        from lxmert_repro.evaluation.nlvr2_metric import nlvr2_scores

        records = getattr(data, split).records
        labels = labels_of(records)
        if not labels:
            return {}
        res = nlvr2_scores(self._by_uid(predictions, records), labels)
        return {f"{split}/accuracy": res["accuracy"], f"{split}/consistency": res["consistency"]}

    def write_predictions(self, path: str | os.PathLike, predictions: dict[int, str], records: Any) -> None:
        from lxmert_repro.evaluation.nlvr2_metric import write_nlvr2_predictions

        write_nlvr2_predictions(path, self._by_uid(predictions, records))

    def score_files(self, cfg: DictConfig) -> dict[str, Any]:
        """lxmert-evaluate task=nlvr2 predictions=P.csv annotations=A.json (LXMERT's json or the official jsonl)."""
        from lxmert_repro.evaluation.nlvr2_metric import nlvr2_scores, read_nlvr2_predictions

        preds = read_nlvr2_predictions(existing(cfg.get("predictions"), "predictions"))
        return nlvr2_scores(preds, self._annotation_labels(cfg))

    def _annotation_labels(self, cfg: DictConfig) -> dict[str, str]:
        from lxmert_repro.data.formats.nlvr2 import read_nlvr2

        exs = read_nlvr2(existing(cfg.get("annotations"), "annotations"))
        return {e.uid: e.main_answer for e in exs if e.main_answer}

    def evaluate_with_annotations(self, cfg: DictConfig, predictions: dict[int, str], records: Any) -> dict[str, Any]:
        from lxmert_repro.evaluation.nlvr2_metric import nlvr2_scores

        labels = self._annotation_labels(cfg) if cfg.get("annotations") else labels_of(records)
        return nlvr2_scores(self._by_uid(predictions, records), labels) if labels else {}
