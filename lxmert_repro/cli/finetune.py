"""``lxmert-finetune``: downstream fine-tuning (task=vqa | gqa | nlvr2) as a Hydra app (configs/finetune.yaml).

lxmert-finetune experiment=easy_vqa_vqa
lxmert-finetune experiment=easy_vqa_gqa          # task=gqa; experiment=easy_vqa_nlvr2: task=nlvr2
lxmert-finetune experiment=lxmert_paper_vqa optim.lr=5e-5 trainer.max_epochs=2 model=lxmert_tiny
lxmert-finetune -m hparams_search=vqa_optuna      # Optuna sweep, one run dir per trial
accelerate launch -m lxmert_repro.cli.finetune ...      # several processes / GPUs / nodes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig

from lxmert_repro.cli import CONFIG_PATH, PathsConfig, objective, run_app
from lxmert_repro.config_schema import validate_config
from lxmert_repro.training.data_setup import FinetuneDataConfig
from lxmert_repro.training.finetune import FinetuneTaskConfig
from lxmert_repro.training.loop import TrainerConfig
from lxmert_repro.training.optim import OptimConfig
from lxmert_repro.training.tracking import LoggerConfig


@dataclass
class FinetuneApp:
    """Schema of configs/finetune.yaml; ``task``, ``model`` and ``tokenizer`` are ``_target_`` nodes."""

    task_name: str = MISSING
    run_name: str = MISSING
    optimized_metric: str | None = None
    task: Any = None
    model: Any = None
    data: FinetuneDataConfig = field(default_factory=FinetuneDataConfig)
    tokenizer: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    finetune: FinetuneTaskConfig = field(default_factory=FinetuneTaskConfig)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="finetune")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.finetune import train_task

    validate_config(cfg, FinetuneApp)

    return objective(cfg, train_task(cfg))


def main() -> None:
    run_app(_app, "lxmert-finetune")


if __name__ == "__main__":
    main()
