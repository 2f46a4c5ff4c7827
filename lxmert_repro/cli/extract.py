"""lxmert-extract: a folder or list of images -> feature store (Hydra app, Accelerate for several processes)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig

from lxmert_repro.cli import CONFIG_PATH, run_app
from lxmert_repro.config_schema import check, one_of, validate_config
from lxmert_repro.features.detectors import build_detector, load_detector
from lxmert_repro.features.detectors.build import DetectorConfig
from lxmert_repro.features.extract import (
    IMAGE_EXTENSIONS,
    UnreadableImagesError,
    extract_to_store,
    list_images,
    load_given_boxes,
)
from lxmert_repro.features.images import image_reader_from_cfg
from lxmert_repro.io_utils import atomic_write_json
from lxmert_repro.launch import use_cpu

log = logging.getLogger("lxmert-extract")


@dataclass
class ExtractApp:
    """Schema of configs/extract.yaml; ``image_reader`` is a ``_target_`` node."""

    detector: DetectorConfig = field(default_factory=DetectorConfig)
    image_reader: Any = None
    checkpoint: str | None = None
    input: str = MISSING
    output: str = MISSING
    image_id_prefix: str = ""
    batch_size: int = 32
    num_workers: int = 0
    feat_dtype: str = "float16"
    given_boxes: str | None = None
    progress: bool = True
    fail_on_skipped: bool = True
    cpu: bool = False
    class_distribution_topk: Any = None  # null / 0 | k | "full" (an int or a word: checked below)

    def __post_init__(self) -> None:
        check(self.batch_size > 0, "batch_size", self.batch_size, "a positive integer")
        check(self.num_workers >= 0, "num_workers", self.num_workers, "an integer >= 0")
        one_of("feat_dtype", self.feat_dtype, ("float16", "float32"))
        k = self.class_distribution_topk
        check(
            k is None or k == "full" or (type(k) is int and k >= 0),
            "class_distribution_topk",
            k,
            "null, 0 (off), a positive integer k, or full",
        )


def run(cfg: DictConfig) -> dict:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=use_cpu(cfg.get("cpu")))
    if cfg.checkpoint:
        detector, det_cfg = load_detector(cfg.checkpoint)
    else:
        detector, det_cfg = build_detector(cfg.detector), cfg.detector
        if not cfg.detector.get("weights"):
            log.warning("detector has no weights (random initialisation): set checkpoint=... or detector.weights=...")
    items = list_images(cfg.input, cfg.image_id_prefix)
    if not items:
        raise FileNotFoundError(
            f"input={cfg.input}: no images (expected image files {', '.join(IMAGE_EXTENSIONS)} "
            "in the folder, or lines in the list file)"
        )
    given = load_given_boxes(cfg.given_boxes) if cfg.given_boxes else None
    stats = extract_to_store(
        detector,
        items,
        cfg.output,
        batch_size=cfg.batch_size,
        num_workers=cfg.num_workers,
        feat_dtype=cfg.feat_dtype,
        given_boxes=given,
        accelerator=accelerator,
        image_reader=image_reader_from_cfg(cfg),
        class_topk=cfg.get("class_distribution_topk"),
        progress=cfg.progress and accelerator.is_local_main_process,
        metadata={"detector": det_cfg.model._target_.rsplit(".", 1)[-1], "checkpoint": str(cfg.checkpoint or "")},
    )
    summary = {
        "images": stats.total,
        "already_done": stats.skipped_done,
        "written": stats.written,
        "stored": stats.stored,
        "skipped": len(stats.errors),
        "errors": stats.errors,
        "degenerate_boxes": stats.degenerate,
        "seconds": round(stats.seconds, 2),
        "images_per_s": round(stats.images_per_s, 2),
    }
    if accelerator.is_main_process:
        atomic_write_json(Path(cfg.output) / "extract_summary.json", summary)
        log.info(
            "extracted %d images in this process (%d already done, %d unreadable) at %.1f images/s; %d images in %s",
            stats.written,
            stats.skipped_done,
            len(stats.errors),
            stats.images_per_s,
            stats.stored,
            cfg.output,
        )
        for err in stats.errors:
            log.warning("unreadable: %s", err)
    tried = len(stats.errors) + stats.written
    nothing = stats.written + stats.skipped_done == 0  # not a single image of the input is in the store
    if stats.errors and (cfg.fail_on_skipped or nothing):
        listed = "; ".join(stats.errors[:3]) + (
            f"; ... ({len(stats.errors) - 3} more)" if len(stats.errors) > 3 else ""
        )
        if nothing:
            hint = "not one image of the input could be read"
        else:
            hint = (
                f"{stats.written + stats.skipped_done} images are in {cfg.output}; fix or remove these and rerun "
                "(it resumes), or set fail_on_skipped=false to accept a store without them"
            )
        raise UnreadableImagesError(
            f"lxmert-extract: {len(stats.errors)} of {tried} images could not be read and "
            f"were skipped ({hint}): {listed}"
        )
    return summary


@hydra.main(config_path=CONFIG_PATH, config_name="extract", version_base=None)
def _app(cfg: DictConfig) -> None:
    validate_config(cfg, ExtractApp)
    print(json.dumps(run(cfg)))


def main() -> None:
    run_app(_app, "lxmert-extract")


if __name__ == "__main__":
    main()
