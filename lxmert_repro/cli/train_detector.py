"""lxmert-train-detector: train a region detector on COCO-format json (Hydra app, Accelerate)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig, OmegaConf

from lxmert_repro.cli import CONFIG_PATH, run_app
from lxmert_repro.config_schema import check, validate_config
from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir
from lxmert_repro.features.detectors.build import DetectorConfig
from lxmert_repro.features.train_detector import DetectorDataConfig, DetectorOptimConfig, train_detector


@dataclass
class TrainDetectorApp:
    """Schema of configs/train_detector.yaml; ``image_reader`` is a ``_target_`` node."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    image_reader: Any = None
    data: DetectorDataConfig = field(default_factory=DetectorDataConfig)
    classes_from_data: bool = True
    output_dir: str = MISSING
    epochs: int = 6
    batch_size: int = 32
    num_workers: int = 0
    seed: int = 0
    cpu: bool = False
    optim: DetectorOptimConfig = field(default_factory=DetectorOptimConfig)
    resume: str | None = "auto"
    save_every_steps: int = 0
    keep_last_k: int = 1
    log_every: int = 20

    def __post_init__(self) -> None:
        for key in ("epochs", "batch_size", "log_every"):
            check(getattr(self, key) > 0, key, getattr(self, key), "a positive integer")


def _easy_vqa_images(split: str) -> str:
    return str(easy_vqa_image_dir(split))


if not OmegaConf.has_resolver("easy_vqa_images"):
    OmegaConf.register_new_resolver("easy_vqa_images", _easy_vqa_images)


@hydra.main(config_path=CONFIG_PATH, config_name="train_detector", version_base=None)
def _app(cfg: DictConfig) -> None:
    validate_config(cfg, TrainDetectorApp)
    print(json.dumps(train_detector(cfg)))


def main() -> None:
    run_app(_app, "lxmert-train-detector")


if __name__ == "__main__":
    main()
