"""From the composed config to datasets + collator: the prepared artifacts ``lxmert-prepare`` wrote
(Arrow splits, tokenizer dir, answer vocabularies) and the feature store. Every missing file is an
error naming the config key and the path."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import MISSING, DictConfig

from lxmert_repro.config_schema import check
from lxmert_repro.data.prepare import DataConfig

log = logging.getLogger(__name__)


@dataclass
class TrainingDataConfig(DataConfig):
    """Schema of ``data`` in the training apps: the prepare-time group plus where its outputs are."""

    prepared_dir: str = MISSING
    features: str = MISSING
    tokenizer_dir: str = MISSING
    max_length: int = 20
    pad_to_max_length: bool = False
    max_boxes: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.max_length > 2, "data.max_length", self.max_length, "an integer > 2 ([CLS] text [SEP])")
        check(
            self.max_boxes is None or self.max_boxes > 0, "data.max_boxes", self.max_boxes, "a positive integer or null"
        )
        check(self.limit is None or self.limit > 0, "data.limit", self.limit, "a positive integer or null")


@dataclass
class PretrainSplits:
    """Schema of ``data.pretrain``."""

    train: str = MISSING
    val: str | None = None
    answers: str | None = None


@dataclass
class PretrainDataConfig(TrainingDataConfig):
    pretrain: PretrainSplits = field(default_factory=PretrainSplits)


@dataclass
class FinetuneDataConfig(TrainingDataConfig):
    """Schema of ``data`` in lxmert-finetune. The chosen task's splits sit at ``data.<task name>`` and are checked
    against that task's own ``splits_schema`` (cli/finetune.py), so a new task adds no field here."""

    train_fraction: float = 1.0
    subset_seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        check(0 < self.train_fraction <= 1, "data.train_fraction", self.train_fraction, "a float in (0, 1]")


def _path(cfg: DictConfig, key: str, *, required: bool = True) -> Path | None:
    """``cfg.data.<key>`` (dotted) as an existing path, or None when optional and unset."""
    node: Any = cfg.data
    for part in key.split("."):
        node = node.get(part) if node is not None and hasattr(node, "get") else None
    if node in (None, ""):
        if required:
            raise ValueError(f"data.{key} is not set; it must point to a file/directory written by lxmert-prepare")
        return None
    p = Path(str(node))
    if not p.exists():
        raise FileNotFoundError(f"data.{key}={p}: no such file or directory (run lxmert-prepare first?)")
    return p


def load_split(path: Path) -> Any:
    """A prepared split: an Arrow dataset directory saved by ``datasets.save_to_disk``."""
    import datasets

    try:
        return datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{path}: not a prepared Arrow dataset ({e})") from None


@dataclass
class PretrainData:
    train: Any
    val: Any | None
    collator: Any
    answers: Any  # AnswerVocab: the pretraining QA answer table (None when QA is off)
    tokenizer: Any
    tokenizer_dir: Path
    store: Any


@dataclass
class VQAData:
    train: Any
    val: Any | None
    test: Any | None
    collator: Any
    answers: Any  # AnswerVocab: the task's answers, row order of the head
    tokenizer: Any
    tokenizer_dir: Path
    store: Any
    val_evaluator: Any = None  # VQAEvaluator when official annotations are configured
    test_evaluator: Any = None


def _max_length(cfg: DictConfig) -> int:
    return int(cfg.data.get("max_length") or 20)  # LXMERT: 20 tokens in every task


def _common(cfg: DictConfig) -> tuple[Any, Path, Any]:
    from lxmert_repro.features.store import FeatureStore
    from lxmert_repro.text.tokenizer import load_tokenizer

    tok_dir = _path(cfg, "tokenizer_dir")
    tokenizer = load_tokenizer(str(tok_dir), max_length=_max_length(cfg))
    store = FeatureStore(str(_path(cfg, "features")))
    return tokenizer, tok_dir, store


def _text_pad_to(cfg: DictConfig) -> int | None:
    """data.pad_to_max_length: every batch's text padded to data.max_length, so the step's shapes never change
    (one CUDA graph for trainer.compile.mode=reduce-overhead instead of one per text length)."""
    return _max_length(cfg) if cfg.data.get("pad_to_max_length") else None


def _subset(ds: Any, limit: int | None) -> Any:
    if limit and limit > 0 and len(ds) > limit:
        return ds.select(range(int(limit)))
    return ds


def _fraction(ds: Any, fraction: float, seed: int, path: Path) -> Any:
    """A random ``fraction`` of the questions (seeded: the same subset for every run that compares on it)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"data.train_fraction must be in (0, 1], got {fraction}")
    n = max(1, round(len(ds) * fraction))
    log.info(
        "training on %d of the %d questions of %s (data.train_fraction=%s, seed %d)", n, len(ds), path, fraction, seed
    )
    return ds.shuffle(seed=seed).select(range(n)).flatten_indices()


def build_pretrain_data(cfg: DictConfig, accelerator: Any = None) -> PretrainData:
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.data.pretrain_dataset import PretrainCollator, PretrainDataset

    tokenizer, tok_dir, store = _common(cfg)
    pcfg = cfg.get("pretrain") or {}
    answers_path = _path(cfg, "pretrain.answers", required=bool(pcfg.get("qa", True)))
    answers = AnswerVocab.load(answers_path) if answers_path is not None else None
    max_boxes = cfg.data.get("max_boxes")
    limit = cfg.data.get("limit")

    def dataset(split: Any) -> PretrainDataset:
        return PretrainDataset(
            _subset(load_split(split), limit),
            store,
            tokenizer=tokenizer,
            answers=answers,
            mlm_prob=float(pcfg.get("mlm_prob", 0.15)),
            obj_mask_prob=float(pcfg.get("obj_mask_prob", 0.15)),
            itm_prob=float(pcfg.get("itm_prob", 0.5)),
            qa=bool(pcfg.get("qa", True)),
            qa_start_epoch=int(pcfg.get("qa_start_epoch", 0)),
            max_boxes=max_boxes,
            seed=int(cfg.trainer.seed),
            obj_mask_split=tuple(pcfg.get("obj_mask_split", (0.8, 0.1, 0.1))),
        )

    train = dataset(_path(cfg, "pretrain.train"))
    val_path = _path(cfg, "pretrain.val", required=False)
    val = dataset(val_path) if val_path is not None else None
    if val is not None:  # fixed masks every evaluation; QA targets included whenever QA is on at all
        val.set_epoch(int(pcfg.get("qa_start_epoch", 0)))
    collator = PretrainCollator(pad_token_id=tokenizer.pad_token_id, pad_to=_text_pad_to(cfg), max_boxes=max_boxes)
    return PretrainData(train, val, collator, answers, tokenizer, tok_dir, store)


def build_vqa_data(
    cfg: DictConfig, accelerator: Any = None, key: str = "vqa", row_keys: bool = False, vqa_evaluators: bool = True
) -> VQAData:
    """An answer-head task's data from the prepared splits at ``data.<key>.*`` (VQA; GQA with ``key="gqa"``,
    ``row_keys`` and no VQA evaluators: its metric is the task's own)."""
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.data.vqa_dataset import VQACollator, VQADataset
    from lxmert_repro.evaluation.vqa_metric import SoftScoreEvaluator, VQAEvaluator

    tokenizer, tok_dir, store = _common(cfg)
    answers = AnswerVocab.load(_path(cfg, f"{key}.answers"))
    max_boxes = cfg.data.get("max_boxes")
    limit = cfg.data.get("limit")

    fraction = float(cfg.data.get("train_fraction") or 1.0)
    splits: dict[str, Any] = {}  # loaded splits by key, for the evaluators

    def dataset(name: str, required: bool) -> VQADataset | None:
        p = _path(cfg, f"{key}.{name}", required=required)
        if p is None:
            return None
        splits[name] = _subset(load_split(p), limit)
        if name == "train" and fraction != 1.0:
            splits[name] = _fraction(splits[name], fraction, int(cfg.data.get("subset_seed", 0)), p)
        return VQADataset(splits[name], store, answers, max_boxes=max_boxes, row_keys=row_keys)

    def evaluator(name: str) -> Any:
        """Official accuracy from the annotations file when one is configured, else the split's soft scores
        (with answers, for the per-answer-type breakdown)."""
        if not vqa_evaluators:
            return None
        p = _path(cfg, f"{key}.{name}_annotations", required=False)
        if p is not None:
            return VQAEvaluator.from_file(p)
        split = splits.get(name)
        if split is None or not any(len(a) for a in split["answers"]):
            return None  # unlabelled (a test-dev/test-std split)
        return SoftScoreEvaluator.from_split(split)

    train, val, test = dataset("train", True), dataset("val", False), dataset("test", False)  # fills `splits`
    collator = VQACollator(
        len(answers), pad_token_id=tokenizer.pad_token_id, pad_to=_text_pad_to(cfg), max_boxes=max_boxes
    )
    return VQAData(
        train=train,
        val=val,
        test=test,
        collator=collator,
        answers=answers,
        tokenizer=tokenizer,
        tokenizer_dir=tok_dir,
        store=store,
        val_evaluator=evaluator("val"),
        test_evaluator=evaluator("test"),
    )
