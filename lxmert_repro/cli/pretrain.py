"""``lxmert-pretrain``: LXMERT pretraining as a Hydra app (configs/pretrain.yaml).

lxmert-pretrain experiment=easy_vqa_pretrain
lxmert-pretrain experiment=lxmert_paper_pretrain optim.lr=5e-5 trainer.max_epochs=2 model=lxmert_tiny
lxmert-pretrain -m optim.lr=1e-4,5e-5                  # basic sweep, one run dir per job
accelerate launch -m lxmert_repro.cli.pretrain ...      # several processes / GPUs / nodes
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig

from lxmert_repro.cli import CONFIG_PATH, PathsConfig, objective, run_app
from lxmert_repro.config_schema import validate_config
from lxmert_repro.training.data_setup import PretrainDataConfig
from lxmert_repro.training.loop import TrainerConfig
from lxmert_repro.training.optim import OptimConfig
from lxmert_repro.training.pretrain import PretrainTaskConfig
from lxmert_repro.training.tracking import LoggerConfig


@dataclass
class PretrainApp:
    """Schema of configs/pretrain.yaml; ``model``, ``objectives`` and ``tokenizer`` are ``_target_`` nodes."""

    task_name: str = MISSING
    run_name: str = MISSING
    optimized_metric: str | None = None
    model: Any = None
    objectives: Any = None
    data: PretrainDataConfig = field(default_factory=PretrainDataConfig)
    tokenizer: Any = None
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    pretrain: PretrainTaskConfig = field(default_factory=PretrainTaskConfig)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="pretrain")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.pretrain import train_pretrain

    validate_config(cfg, PretrainApp)

    return objective(cfg, train_pretrain(cfg))


def main() -> None:
    run_app(_app, "lxmert-pretrain")


if __name__ == "__main__":
    main()
