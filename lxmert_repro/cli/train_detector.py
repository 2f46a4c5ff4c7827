"""lxmert-train-detector: train a region detector on COCO-format json (Hydra app, Accelerate)."""
from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig, OmegaConf

from lxmert_repro.cli import CONFIG_PATH
from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir
from lxmert_repro.features.train_detector import train_detector



def _easy_vqa_images(split: str) -> str:
    return str(easy_vqa_image_dir(split))


if not OmegaConf.has_resolver("easy_vqa_images"):
    OmegaConf.register_new_resolver("easy_vqa_images", _easy_vqa_images)


@hydra.main(config_path=CONFIG_PATH, config_name="train_detector", version_base=None)
def main(cfg: DictConfig) -> None:
    print(json.dumps(train_detector(cfg)))


if __name__ == "__main__":
    main()
