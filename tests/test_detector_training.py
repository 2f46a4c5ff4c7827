"""easy-VQA -> COCO conversion and lxmert-train-detector: train, checkpoint, resume, COCOeval mAP, saved detector."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from pycocotools.coco import COCO

from lxmert_repro.cli import CONFIG_DIR
from lxmert_repro.features.detectors import load_detector
from lxmert_repro.features.train_detector import CocoDetection, detect, train_detector

ROOT = Path(__file__).resolve().parents[1]


def easy_vqa_images(split: str) -> str:
    import easy_vqa

    return os.path.join(os.path.dirname(easy_vqa.__file__), "data", split, "images")


@pytest.fixture(scope="module")
def coco_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coco")
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "easy_vqa_to_coco.py"), "--out-dir", str(out), "--limit", "120"],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    return out


def test_easy_vqa_to_coco(coco_dir):
    coco = COCO(str(coco_dir / "train.json"))
    assert len(coco.getImgIds()) == 120
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == ["circle", "rectangle", "triangle"]
    raw = json.loads((coco_dir / "train.json").read_text())
    assert len(raw["attributes"]) == 8
    for a in raw["annotations"]:
        x, y, w, h = a["bbox"]
        assert 0 <= x and 0 <= y and x + w <= 64 and y + h <= 64 and w >= 4 and h >= 4
    # image 0's questions: "what is the blue shape?" -> rectangle
    a0 = next(a for a in raw["annotations"] if a["image_id"] == 0)
    assert a0["category_id"] == 2 and raw["attributes"][a0["attribute_id"] - 1]["name"] == "blue"
    ds = CocoDetection(str(coco_dir / "train.json"), easy_vqa_images("train"))
    img, tgt, _ = ds[0]
    assert img.shape == (3, 64, 64) and tgt["labels"].tolist() == [1] and tgt["attributes"].tolist() == [2]


def test_train_checkpoint_resume_and_evaluate(tmp_path, coco_dir):
    def cfg(epochs: int):
        with initialize_config_dir(str(CONFIG_DIR), version_base=None):
            return compose(
                "train_detector",
                overrides=[
                    f"data.train_json={coco_dir / 'train.json'}",
                    f"data.train_images={easy_vqa_images('train')}",
                    f"data.val_json={coco_dir / 'test.json'}",
                    f"data.val_images={easy_vqa_images('test')}",
                    "data.limit=32",
                    "data.val_limit=16",
                    "batch_size=8",
                    f"epochs={epochs}",
                    "log_every=1",
                    f"output_dir={tmp_path / 'run'}",
                    "keep_last_k=5",
                ],
            )

    first = train_detector(cfg(1))
    assert first["steps"] == 4 and 0.0 <= first["mAP"] <= 1.0
    second = train_detector(cfg(2))  # resume=auto: continues from the epoch-1 checkpoint
    assert second["steps"] == 8
    lines = [json.loads(l) for l in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [l["step"] for l in lines if not l.get("final")]
    assert steps == list(range(1, 9))  # no step trained twice
    assert (tmp_path / "run" / "checkpoints" / "step_000000008").is_dir()
    assert all(torch.isfinite(torch.tensor(l["loss"])) for l in lines if "loss" in l)
    detector, det_cfg = load_detector(tmp_path / "run" / "detector")
    assert det_cfg.model.attribute_classes[2] == "blue"
    ds = CocoDetection(str(coco_dir / "test.json"), easy_vqa_images("test"), limit=2)
    out = detect(detector, [ds[0][0], ds[1][0]])
    assert len(out) == 2 and all(o["boxes"].shape[1] == 4 for o in out)
