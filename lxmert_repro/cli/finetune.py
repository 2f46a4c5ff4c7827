"""``lxmert-finetune``: VQA fine-tuning as a Hydra app (configs/finetune_vqa.yaml).

    lxmert-finetune experiment=easy_vqa_vqa
    lxmert-finetune experiment=lxmert_paper_vqa optim.lr=5e-5 trainer.max_epochs=2 model=lxmert_tiny
    lxmert-finetune -m hparams_search=vqa_optuna      # Optuna sweep, one run dir per trial
    accelerate launch -m lxmert_repro.cli.finetune ...      # several processes / GPUs / nodes
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lxmert_repro.cli import CONFIG_PATH, objective, prepare_argv


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="finetune_vqa")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.finetune import train_vqa

    return objective(cfg, train_vqa(cfg))


def main() -> None:
    prepare_argv()
    _app()


if __name__ == "__main__":
    main()
