"""Training a RegionDetector on COCO-format detection json (+ optional ``attribute_id`` per annotation).

Accelerate-driven; full-state checkpoints and resume through ``lxmert_repro.training.checkpointing``
(mid-epoch exact: each epoch's order is a seeded permutation, resumed batches are skipped); mAP on a
validation json with pycocotools' COCOeval; the trained detector is saved as a checkpoint directory
(``<run>/detector``) that ``lxmert-extract checkpoint=...`` loads.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import MISSING, DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset
from torchvision.ops import batched_nms

from lxmert_repro.config_schema import check
from lxmert_repro.features.detectors import build_detector, save_detector
from lxmert_repro.features.detectors.detector import RegionDetector
from lxmert_repro.features.images import ImageReader, image_reader_from_cfg
from lxmert_repro.io_utils import atomic_write_json
from lxmert_repro.launch import use_cpu
from lxmert_repro.training.checkpointing import (
    CheckpointManager,
    TrainerState,
    good_checkpoint_sentence,
    resolve_resume,
)
from lxmert_repro.training.loop import NonFiniteLossError
from lxmert_repro.training.optim import linear_warmup_schedule

log = logging.getLogger(__name__)


@dataclass
class DetectorDataConfig:
    """Schema of ``data`` in lxmert-train-detector (configs/train_detector.yaml)."""

    train_json: str = MISSING
    train_images: str = MISSING
    val_json: str | None = None
    val_images: str | None = None
    limit: int | None = None
    val_limit: int | None = None


@dataclass
class DetectorOptimConfig:
    """Schema of ``optim`` in lxmert-train-detector (AdamW + linear warmup)."""

    lr: float = 2e-3
    weight_decay: float = 1e-4
    warmup_ratio: float = 0.05
    max_grad_norm: float = 10.0

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", self.lr, "a positive float")
        check(0 <= self.warmup_ratio <= 1, "optim.warmup_ratio", self.warmup_ratio, "a float in [0, 1]")


class CocoDetection(Dataset):
    """(image (3,H,W) float RGB 0..255, target {boxes (n,4) xyxy, labels (n,), attributes (n,) -1 = none}, image id).

    Category ids map to 0..C-1 in ascending id order; attribute ids likewise via the json's ``attributes`` list.
    Images are read upright (EXIF orientation applied, ``ImageReader``), so each image's ``width``/``height`` and
    boxes must be those of the upright image, as image viewers and annotation tools show it; checked per image.
    """

    def __init__(self, ann_file: str, image_root: str, limit: int | None = None, reader: ImageReader | None = None):
        from pycocotools.coco import COCO

        ann_path = Path(ann_file)
        if not ann_path.is_file():
            raise FileNotFoundError(f"COCO annotation file not found: {ann_path}")
        with contextlib.redirect_stdout(io.StringIO()):
            self.coco = COCO(str(ann_path))
        self.ann_path = ann_path
        self.root = Path(image_root)
        self.reader = reader or ImageReader()
        self.ids = sorted(self.coco.getImgIds())[:limit]
        self.cat_ids = sorted(self.coco.getCatIds())
        self.cat_index = {c: i for i, c in enumerate(self.cat_ids)}
        self.class_names = [self.coco.cats[c]["name"] for c in self.cat_ids]
        attrs = sorted(self.coco.dataset.get("attributes", []), key=lambda a: a["id"])
        self.attr_index = {a["id"]: i for i, a in enumerate(attrs)}
        self.attribute_names = [a["name"] for a in attrs]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        img_id = self.ids[i]
        info = self.coco.imgs[img_id]
        path = self.root / info["file_name"]
        img = self.reader.tensor(path)
        self._check_size(info, img.shape[2], img.shape[1])
        anns = [a for a in self.coco.imgToAnns.get(img_id, []) if not a.get("iscrowd", 0)]
        boxes = torch.tensor(
            [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns],
            dtype=torch.float32,
        ).reshape(-1, 4)
        labels = torch.tensor([self.cat_index[a["category_id"]] for a in anns], dtype=torch.long)
        attrs = []
        for a in anns:
            aid = a.get("attribute_id")
            if aid is not None and aid not in self.attr_index:
                raise ValueError(f"annotation {a['id']}: field 'attribute_id' {aid} is not in the json's 'attributes'")
            attrs.append(self.attr_index[aid] if aid is not None else -1)
        return img, {"boxes": boxes, "labels": labels, "attributes": torch.tensor(attrs, dtype=torch.long)}, img_id

    def _check_size(self, info: dict, w: int, h: int) -> None:
        """The json's width/height (when given) must be the upright image's: boxes are in that frame."""
        want = (info.get("width"), info.get("height"))
        if want == (None, None) or want == (w, h):
            return
        where = f"{self.ann_path}: image id {info['id']} ({info['file_name']})"
        if want == (h, w):
            raise ValueError(
                f"{where}: fields 'width', 'height' are {want[0]}x{want[1]}, but the upright image "
                f"(EXIF orientation applied) is {w}x{h}; the json looks annotated in the stored, "
                "rotated frame: width, height and boxes must refer to the upright image"
            )
        raise ValueError(
            f"{where}: fields 'width', 'height' are {want[0]}x{want[1]}, expected the image's "
            f"size {w}x{h} (upright, EXIF orientation applied)"
        )


def _collate(batch):
    return tuple(zip(*batch))


@torch.no_grad()
def detect(
    model: RegionDetector,
    images: list[torch.Tensor],
    score_thresh: float = 0.05,
    nms_iou: float = 0.5,
    max_det: int = 100,
) -> list[dict[str, torch.Tensor]]:
    """Standard detector output for mAP: class-specific regressed boxes, score threshold, per-class NMS."""
    model.eval()
    orig = [tuple(im.shape[-2:]) for im in images]
    il, _ = model._prepare(images)
    feats = model._features(il.tensors)
    proposals, _ = model.rpn(il, feats)
    preds = model.roi_heads.predict(feats, proposals, il.image_sizes)
    out = []
    for p, s, o in zip(preds, il.image_sizes, orig):
        R, C = p["obj_probs"].shape
        boxes = p["regressed"].reshape(-1, 4)
        scores = p["obj_probs"].reshape(-1)
        labels = torch.arange(C, device=scores.device).repeat(R)
        keep = torch.where(scores > score_thresh)[0]
        boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
        keep = batched_nms(boxes, scores, labels, nms_iou)[:max_det]
        scale = torch.tensor([o[1] / s[1], o[0] / s[0], o[1] / s[1], o[0] / s[0]], device=boxes.device)
        out.append({"boxes": boxes[keep] * scale, "scores": scores[keep], "labels": labels[keep]})
    return out


def evaluate_map(model: RegionDetector, ds: CocoDetection, batch_size: int = 32) -> dict[str, float]:
    """COCO bbox mAP (pycocotools) of ``model`` on ``ds``."""
    from pycocotools.cocoeval import COCOeval

    results = []
    loader = DataLoader(ds, batch_size=batch_size, collate_fn=_collate)
    for imgs, _, ids in loader:
        device = next(model.parameters()).device
        for img_id, det in zip(ids, detect(model, [im.to(device) for im in imgs])):
            for b, s, l in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist()):
                results.append(
                    {
                        "image_id": img_id,
                        "category_id": ds.cat_ids[l],
                        "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]],
                        "score": s,
                    }
                )
    if not results:
        return {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = ds.coco.loadRes(results)
        ev = COCOeval(ds.coco, dt, "bbox")
        ev.params.imgIds = ds.ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"mAP": float(ev.stats[0]), "AP50": float(ev.stats[1]), "AP75": float(ev.stats[2])}


@torch.no_grad()
def attribute_accuracy(model: RegionDetector, ds: CocoDetection, batch_size: int = 32) -> float | None:
    """Attribute accuracy on ground-truth boxes (given-boxes mode)."""
    if not model.has_attributes:
        return None
    right = total = 0
    for imgs, tgts, _ in DataLoader(ds, batch_size=batch_size, collate_fn=_collate):
        device = next(model.parameters()).device
        dets = model.extract([im.to(device) for im in imgs], given_boxes=[t["boxes"] for t in tgts])
        for d, t in zip(dets, tgts):
            m = t["attributes"] >= 0
            right += int((d.attr_ids.cpu()[m] == t["attributes"][m]).sum())
            total += int(m.sum())
    return right / total if total else None


def train_detector(cfg: DictConfig) -> dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    run_dir = Path(cfg.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    accelerator = Accelerator(project_dir=str(run_dir), cpu=use_cpu(cfg.get("cpu")))
    set_seed(cfg.seed)
    reader = image_reader_from_cfg(cfg)
    train_ds = CocoDetection(cfg.data.train_json, cfg.data.train_images, cfg.data.get("limit"), reader)
    val_ds = (
        CocoDetection(cfg.data.val_json, cfg.data.val_images, cfg.data.get("val_limit"), reader)
        if cfg.data.get("val_json")
        else None
    )
    det_cfg = OmegaConf.to_container(cfg.detector, resolve=True)
    if cfg.classes_from_data:  # the class/attribute names the data defines
        det_cfg["model"]["object_classes"] = train_ds.class_names
        det_cfg["model"]["attribute_classes"] = train_ds.attribute_names
    model = build_detector(det_cfg, load=False)
    if det_cfg.get("weights"):  # initialisation (e.g. torchvision COCO weights); an attribute head may be new
        from lxmert_repro.features.detectors.weights import load_weights

        load_weights(model, det_cfg["weights"], det_cfg.get("weights_format", "ours"), strict=False)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    steps_per_epoch = math.ceil(len(train_ds) / (cfg.batch_size * accelerator.num_processes))
    total_steps = steps_per_epoch * cfg.epochs
    scheduler = linear_warmup_schedule(optimizer, total_steps, cfg.optim.warmup_ratio)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ckpt = CheckpointManager(accelerator, run_dir, keep_last_k=cfg.keep_last_k)
    state = TrainerState()
    resume_from = resolve_resume(cfg.resume, run_dir)
    if resume_from is not None:
        state = ckpt.load(resume_from)
        log.info(
            "resumed from %s at epoch %d batch %d (step %d)",
            resume_from,
            state.epoch,
            state.batch_in_epoch,
            state.global_step,
        )
    metrics_path = run_dir / "metrics.jsonl"
    config_dict = OmegaConf.to_container(cfg, resolve=True)
    t0 = time.perf_counter()
    while state.epoch < cfg.epochs:
        g = torch.Generator().manual_seed(cfg.seed * 1000 + state.epoch)
        order = torch.randperm(len(train_ds), generator=g).tolist()
        order = order[accelerator.process_index :: accelerator.num_processes]
        order = order[state.batch_in_epoch * cfg.batch_size :]
        loader = DataLoader(
            torch.utils.data.Subset(train_ds, order),
            batch_size=cfg.batch_size,
            num_workers=cfg.num_workers,
            collate_fn=_collate,
        )
        model.train()
        for imgs, tgts, _ in loader:
            dev = accelerator.device
            losses = model([im.to(dev) for im in imgs], [{k: v.to(dev) for k, v in t.items()} for t in tgts])
            loss = sum(losses.values())
            if not torch.isfinite(loss):
                good = ckpt.quarantine_from(state.global_step)  # checkpoints of this step on are not good
                raise NonFiniteLossError(
                    f"non-finite detector loss at step {state.global_step}: "
                    f"{ {k: float(v) for k, v in losses.items()} }. {good_checkpoint_sentence(good)}"
                )
            ckpt.confirm(state.global_step)
            optimizer.zero_grad()
            accelerator.backward(loss)
            if cfg.optim.max_grad_norm:
                accelerator.clip_grad_norm_(params, cfg.optim.max_grad_norm)
            optimizer.step()
            scheduler.step()
            state.global_step += 1
            state.batch_in_epoch += 1
            if state.global_step % cfg.log_every == 0 and accelerator.is_main_process:
                rec = {
                    "step": state.global_step,
                    "epoch": state.epoch,
                    "loss": round(loss.item(), 5),
                    **{k: round(v.item(), 5) for k, v in losses.items()},
                    "lr": scheduler.get_last_lr()[0],
                    "elapsed_s": round(time.perf_counter() - t0, 1),
                }
                log.info("%s", rec)
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            if cfg.save_every_steps and state.global_step % cfg.save_every_steps == 0:
                ckpt.save(state, config_dict)
        state.epoch += 1
        state.batch_in_epoch = 0
        ckpt.save(state, config_dict)
    ckpt.finish()
    train_s = time.perf_counter() - t0
    result: dict[str, Any] = {"steps": state.global_step, "train_seconds": round(train_s, 1)}
    unwrapped = accelerator.unwrap_model(model)
    if accelerator.is_main_process:
        if val_ds is not None:
            result.update(evaluate_map(unwrapped, val_ds, cfg.batch_size))
            acc = attribute_accuracy(unwrapped, val_ds, cfg.batch_size)
            if acc is not None:
                result["attribute_accuracy"] = acc
        out = save_detector(unwrapped, det_cfg, run_dir / "detector")
        result["detector_checkpoint"] = str(out)
        with open(metrics_path, "a") as f:
            f.write(json.dumps({"step": state.global_step, "final": True, **result}) + "\n")
        atomic_write_json(run_dir / "results.json", result)
        log.info("detector training done: %s", result)
    accelerator.wait_for_everyone()
    return result
