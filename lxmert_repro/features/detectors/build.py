"""Detector configs -> detectors, and detector checkpoints (a directory: detector.yaml + model.safetensors).

A detector config (Hydra group ``configs/detector/``):
    model: {_target_: <builder>, object_classes: list | vocab-file path | count, attribute_classes: ..., ...}
    weights: null | path          # weight file to load after building
    weights_format: ours | detectron2 | torchvision
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lxmert_repro.config_schema import one_of
from lxmert_repro.features.detectors.detector import RegionDetector
from lxmert_repro.features.detectors.weights import load_weights, save_weights
from lxmert_repro.io_utils import atomic_write_text

CONFIG_FILE = "detector.yaml"
WEIGHTS_FILE = "model.safetensors"
WEIGHT_FORMATS = ("ours", "detectron2", "torchvision")


@dataclass
class DetectorConfig:
    """Schema of the ``detector`` group (configs/detector/); ``model`` is the builder's ``_target_`` node."""

    model: Any = None
    weights: str | None = None
    weights_format: str = "ours"

    def __post_init__(self) -> None:
        one_of("detector.weights_format", self.weights_format, WEIGHT_FORMATS)


def resolve_class_names(spec: Any, prefix: str, field: str) -> list[str]:
    """A list of names, a vocab file (one name per line, first comma-separated synonym kept), or a count."""
    if spec is None:
        return []
    if isinstance(spec, int):
        return [f"{prefix}{i}" for i in range(spec)]
    if isinstance(spec, str) and spec == "torchvision:coco":
        from torchvision.models.detection import FasterRCNN_ResNet50_FPN_Weights

        return list(FasterRCNN_ResNet50_FPN_Weights.COCO_V1.meta["categories"][1:])  # drop __background__
    if isinstance(spec, str):
        path = Path(spec)
        if not path.is_file():
            raise FileNotFoundError(f"detector config field '{field}': vocab file not found: {path}")
        names = [line.strip().split(",")[0] for line in path.read_text().splitlines() if line.strip()]
        if not names:
            raise ValueError(f"{path}: empty vocab file (field '{field}')")
        return names
    return [str(x) for x in spec]


def resolved_config(cfg: DictConfig | dict) -> DictConfig:
    """Copy of ``cfg`` with class names spelled out (so a saved detector.yaml is self-contained)."""
    cfg = OmegaConf.create(OmegaConf.to_container(OmegaConf.create(cfg), resolve=True))
    if "model" not in cfg:
        raise ValueError("detector config: missing field 'model' (the builder with _target_)")
    cfg.model.object_classes = resolve_class_names(cfg.model.get("object_classes"), "obj_", "model.object_classes")
    cfg.model.attribute_classes = resolve_class_names(
        cfg.model.get("attribute_classes"), "attr_", "model.attribute_classes"
    )
    if not cfg.model.object_classes:
        raise ValueError("detector config: field 'model.object_classes' is empty")
    return cfg


def build_detector(cfg: DictConfig | dict, load: bool = True) -> RegionDetector:
    cfg = resolved_config(cfg)
    model = instantiate(cfg.model, _convert_="all")
    if not isinstance(model, RegionDetector):
        raise TypeError(f"detector config model._target_ built a {type(model).__name__}, expected RegionDetector")
    if load and cfg.get("weights"):
        load_weights(model, cfg.weights, cfg.get("weights_format", "ours"))
    return model


def save_detector(model: RegionDetector, cfg: DictConfig | dict, out_dir: str | os.PathLike) -> Path:
    """Write ``out_dir/detector.yaml`` (config pointing at ``model.safetensors``) and the weights."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_weights(model, out_dir / WEIGHTS_FILE)
    cfg = resolved_config(cfg)
    cfg.weights = WEIGHTS_FILE
    cfg.weights_format = "ours"
    atomic_write_text(out_dir / CONFIG_FILE, OmegaConf.to_yaml(cfg))
    return out_dir


def load_detector(path: str | os.PathLike) -> tuple[RegionDetector, DictConfig]:
    """Build and load a detector checkpoint directory written by ``save_detector``."""
    path = Path(path)
    cfg_path = path / CONFIG_FILE
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: not a detector checkpoint (missing {CONFIG_FILE})")
    cfg = OmegaConf.load(cfg_path)
    if cfg.get("weights") and not os.path.isabs(cfg.weights):
        cfg.weights = str(path / cfg.weights)
    return build_detector(cfg), cfg
