"""``lxmert-pretrain``: LXMERT pretraining as a Hydra app (configs/pretrain.yaml).

    lxmert-pretrain experiment=easy_vqa_pretrain
    lxmert-pretrain experiment=lxmert_paper_pretrain optim.lr=5e-5 trainer.max_epochs=2 model=lxmert_tiny
    lxmert-pretrain -m optim.lr=1e-4,5e-5                  # basic sweep, one run dir per job
    accelerate launch -m lxmert_repro.cli.pretrain ...      # several processes / GPUs / nodes
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lxmert_repro.cli import CONFIG_PATH, objective, prepare_argv


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="pretrain")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.pretrain import train_pretrain

    return objective(cfg, train_pretrain(cfg))


def main() -> None:
    prepare_argv()
    _app()


if __name__ == "__main__":
    main()
