"""``lxmert-prepare``: annotations -> tokenized Arrow splits + tokenizer dir + answer vocabulary.

    lxmert-prepare data=easy_vqa features=data/easy_vqa/features
    lxmert-prepare data=vqa_v2 tokenizer=bert_base_uncased tokenizer.path=/models/bert-base-uncased features=...
    lxmert-prepare data=lxmert_pretrain tokenizer=bert_base_uncased features=... missing_images=drop

Under a multi-process launch the main process prepares first (``accelerate``'s ``main_process_first``);
the others then find the finished artifacts and only read the summary.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import instantiate
from omegaconf import MISSING, DictConfig, OmegaConf

from lxmert_repro.cli import CONFIG_PATH, PathsConfig, run_app
from lxmert_repro.config_schema import one_of, validate_config
from lxmert_repro.data.prepare import DataConfig
from lxmert_repro.launch import use_cpu

log = logging.getLogger(__name__)


@dataclass
class PrepareApp:
    """Schema of configs/prepare.yaml; ``tokenizer`` is a ``_target_`` node."""

    task_name: str = MISSING
    run_name: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    tokenizer: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    output_dir: str = MISSING
    features: str | None = MISSING  # null skips the image-id check
    missing_images: str = "error"
    empty_sentences: str = "warn"

    def __post_init__(self) -> None:
        one_of("missing_images", self.missing_images, ("error", "drop"))
        one_of("empty_sentences", self.empty_sentences, ("warn", "drop", "error"))


def run_prepare(cfg: DictConfig) -> dict:
    """Prepare the configured data set (rank 0 first, then the others read its summary)."""
    from accelerate import PartialState

    from lxmert_repro.data.prepare import SUMMARY_FILE, prepare
    from lxmert_repro.features.store import FeatureStore

    out = Path(cfg.output_dir)
    state = PartialState(cpu=use_cpu())
    with state.main_process_first():
        if not state.is_main_process:
            return json.loads((out / SUMMARY_FILE).read_text())
        store = None
        if cfg.features:
            store = FeatureStore(cfg.features)
        else:
            log.warning("features=null: image ids are NOT checked against a feature store")
        splits = {name: [instantiate(r) for r in readers] for name, readers in cfg.data.splits.items()}
        d = cfg.data
        summary = prepare(
            splits,
            out,
            instantiate(cfg.tokenizer),
            kind=d.kind,
            answers_from=list(d.answers.from_splits),
            answer_min_count=int(d.answers.min_count),
            answer_normalizer=d.answers.get("normalizer", "vqa_official"),
            qa_sources=None if d.answers.get("qa_sources") is None else list(d.answers.qa_sources),
            tokenizer_from=list(d.tokenizer_from_splits),
            max_length=int(cfg.tokenizer.max_length),
            feature_store=store,
            missing_images=cfg.missing_images,
            empty_sentences=cfg.empty_sentences,
            answers_file=d.answers.get("file"),
            answers_list=None if d.answers.get("list") is None else list(d.answers.list),
            extra_summary={
                "data": d.name,
                "features": cfg.features,
                "config": OmegaConf.to_container(cfg.data, resolve=True),
            },
        )
    log.info(
        "prepared %s into %s: %s (by the main process of %d)",
        cfg.data.name,
        out,
        {k: v["examples"] for k, v in summary["splits"].items()},
        state.num_processes,
    )
    return summary


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="prepare")
def _app(cfg: DictConfig) -> None:
    validate_config(cfg, PrepareApp)
    summary = run_prepare(cfg)
    print(json.dumps({k: summary[k] for k in ("splits", "vocab_size", "num_answers")}, indent=2))


def main() -> None:
    run_app(_app, "lxmert-prepare")


if __name__ == "__main__":
    main()
