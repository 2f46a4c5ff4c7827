"""``lxmert-evaluate``: score a prediction file with the task's official metric (task=vqa | gqa | nlvr2; no model),
or evaluate a fine-tuned model dir on a prepared split. Hydra app (configs/evaluate.yaml); prints JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig

from lxmert_repro.cli import CONFIG_PATH, PathsConfig, run_app
from lxmert_repro.config_schema import check, validate_config
from lxmert_repro.training.loop import TrainerConfig
from lxmert_repro.training.tracking import LoggerConfig


@dataclass
class EvaluateApp:
    """Schema of configs/evaluate.yaml."""

    task_name: str = MISSING
    run_name: str = MISSING
    task: Any = None  # a ``_target_`` node (configs/task/)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    predictions: str | None = None
    annotations: str | None = None
    questions: str | None = None
    choices: str | None = None
    consistency: bool = False
    allow_missing: bool = False
    checkpoint: str | None = None
    split: str | None = None
    features: str | None = None
    batch_size: int = 64
    max_boxes: int | None = None
    num_workers: int = 0

    def __post_init__(self) -> None:
        check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="evaluate")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.evaluate import run_evaluate

    validate_config(cfg, EvaluateApp)

    result = run_evaluate(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "per_question_type"}, indent=2))
    overall = result.get("overall", result.get("accuracy", result.get("soft_accuracy")))
    return None if overall is None else float(overall)


def main() -> None:
    run_app(_app, "lxmert-evaluate")


if __name__ == "__main__":
    main()
