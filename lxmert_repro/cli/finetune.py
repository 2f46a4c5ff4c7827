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

    @staticmethod
    def nested_schemas(plain: dict[str, Any]) -> dict[str, type]:
        """``data.<task name>`` is checked against the chosen task's ``splits_schema`` (validate_config)."""
        from hydra.utils import get_object

        task = plain.get("task") or {}
        try:
            cls = get_object(str(task.get("_target_")))
        except Exception:  # validate_config names the bad _target_ itself
            return {}
        name = task.get("name") or getattr(cls, "name", "")
        schema = getattr(cls, "splits_schema", None)
        return {f"data.{name}": schema} if name and schema else {}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="finetune")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.finetune import train_task

    validate_config(cfg, FinetuneApp)

    return objective(cfg, train_task(cfg))


def main() -> None:
    run_app(_app, "lxmert-finetune")


if __name__ == "__main__":
    main()
