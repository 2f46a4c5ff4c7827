"""``lxmert-finetune``: downstream fine-tuning (task=vqa | gqa | nlvr2) as a Hydra app (configs/finetune.yaml).

    lxmert-finetune experiment=easy_vqa_vqa
    lxmert-finetune experiment=easy_vqa_gqa          # task=gqa; experiment=easy_vqa_nlvr2: task=nlvr2
    lxmert-finetune experiment=lxmert_paper_vqa optim.lr=5e-5 trainer.max_epochs=2 model=lxmert_tiny
    lxmert-finetune -m hparams_search=vqa_optuna      # Optuna sweep, one run dir per trial
    accelerate launch -m lxmert_repro.cli.finetune ...      # several processes / GPUs / nodes
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lxmert_repro.cli import CONFIG_DIR, objective, prepare_argv


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="finetune")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.finetune import train_task

    return objective(cfg, train_task(cfg))


def main() -> None:
    prepare_argv()
    _app()


if __name__ == "__main__":
    main()
