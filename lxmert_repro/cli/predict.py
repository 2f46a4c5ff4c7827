"""``lxmert-predict``: image + question(s) → detector → tokenizer → fine-tuned LXMERT → top answers with
scores, printed as JSON; optionally a picture of the answer's cross-attention over the boxes.
Hydra app (configs/predict.yaml)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hydra
from omegaconf import MISSING, DictConfig, ListConfig

from lxmert_repro.cli import CONFIG_PATH, PathsConfig, run_app
from lxmert_repro.config_schema import check, validate_config


@dataclass
class PredictApp:
    """Schema of configs/predict.yaml; ``task`` and ``image_reader`` are ``_target_`` nodes."""

    task_name: str = MISSING
    run_name: str = MISSING
    task: Any = None
    paths: PathsConfig = field(default_factory=PathsConfig)
    image_reader: Any = None
    checkpoint: str = MISSING
    detector_checkpoint: str | None = None
    image: str | None = None
    features: str | None = None
    image_id: str | None = None
    questions: Any = MISSING  # a question or a list of questions (checked by run_predict)
    top_k: int = 5
    attention_picture: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        check(self.top_k > 0, "top_k", self.top_k, "a positive integer")
        check(
            self.device in ("auto", "cpu") or self.device.startswith("cuda"),
            "device",
            self.device,
            "auto | cpu | cuda[:N]",
        )


def run_predict(cfg: DictConfig) -> list[dict[str, Any]]:
    import torch

    from lxmert_repro.features.images import image_reader_from_cfg
    from lxmert_repro.io_utils import atomic_write_json
    from lxmert_repro.tasks.base import build_task
    from lxmert_repro.tasks.vqa import AnswerHeadTask
    from lxmert_repro.training.loop import output_dir_from_cfg
    from lxmert_repro.training.predict import (
        answer_questions,
        detect_regions,
        regions_from_store,
        save_attention_picture,
    )

    task = build_task(cfg)
    if not isinstance(task, AnswerHeadTask):
        raise ValueError(
            f"lxmert-predict answers questions about one image (task=vqa or task=gqa); task={task.name} "
            "is scored on prepared splits with lxmert-evaluate task=... checkpoint=... split=..."
        )
    reader = image_reader_from_cfg(cfg)
    questions = list(cfg.questions) if isinstance(cfg.questions, (list, ListConfig)) else [str(cfg.questions)]
    if not questions or not all(isinstance(q, str) and q.strip() for q in questions):
        raise ValueError(f"questions: expected a non-empty question or list of questions, got {cfg.questions!r}")
    if cfg.get("features") and cfg.get("image_id"):
        regions = regions_from_store(cfg.features, str(cfg.image_id))
    elif cfg.get("detector_checkpoint") and cfg.get("image"):
        regions = detect_regions(cfg.detector_checkpoint, cfg.image, reader)
    else:
        raise ValueError(
            "lxmert-predict needs detector_checkpoint=DIR image=FILE (run the detector) "
            "or features=STORE image_id=ID (regions already extracted)"
        )
    device = str(cfg.device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    picture = cfg.get("attention_picture")
    results = answer_questions(cfg.checkpoint, regions, questions, int(cfg.top_k), device, with_attention=bool(picture))
    if picture:
        if not cfg.get("image"):
            raise ValueError("attention_picture needs image=FILE to draw on")
        for i, r in enumerate(results):
            path = Path(str(picture))
            if len(results) > 1:
                path = path.with_name(f"{path.stem}_{i}{path.suffix or '.png'}")
            r["attention_picture"] = str(save_attention_picture(cfg.image, regions, r, path, reader=reader))
    try:
        out_dir = output_dir_from_cfg(cfg)
    except ValueError:  # outside a Hydra app (no run dir): the returned/printed results are the output
        out_dir = None
    if out_dir is not None:
        atomic_write_json(out_dir / "predictions.json", results)
    return results


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def _app(cfg: DictConfig) -> None:
    validate_config(cfg, PredictApp)
    print(json.dumps(run_predict(cfg), indent=2))


def main() -> None:
    run_app(_app, "lxmert-predict")


if __name__ == "__main__":
    main()
