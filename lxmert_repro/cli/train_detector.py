"""lxmert-train-detector: train a region detector on COCO-format json (Hydra app, Accelerate)."""
from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from lxmert_repro.cli import CONFIG_DIR, run_app
from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir
from lxmert_repro.features.train_detector import train_detector



def _easy_vqa_images(split: str) -> str:
    return str(easy_vqa_image_dir(split))


if not OmegaConf.has_resolver("easy_vqa_images"):
    OmegaConf.register_new_resolver("easy_vqa_images", _easy_vqa_images)


@hydra.main(config_path=str(CONFIG_DIR), config_name="train_detector", version_base=None)
def _app(cfg: DictConfig) -> None:
    print(json.dumps(train_detector(cfg)))


def main() -> None:
    run_app(_app, "lxmert-train-detector")


if __name__ == "__main__":
    main()
