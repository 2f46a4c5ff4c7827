"""The extraction loop: images -> detector -> feature store. Batched, sharded across Accelerate processes
(each writes its own shard store; the main process merges them at the end), resumable (images already in the
final store or a shard are skipped), unreadable images reported and skipped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lxmert_repro.features.detectors.detector import Detections, RegionDetector
from lxmert_repro.features.images import ImageReader
from lxmert_repro.features.store import ClassDist, FeatureStore, FeatureStoreWriter, merge_stores

log = logging.getLogger(__name__)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def list_images(source: str | os.PathLike, id_prefix: str = "") -> list[tuple[str, str]]:
    """(image id, path) pairs from a folder (sorted; id = file stem) or a list file (one ``path`` or
    ``id<TAB>path`` per line; relative paths are relative to the list file)."""
    source = Path(source)
    if source.is_dir():
        files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        items = [(id_prefix + p.stem, str(p)) for p in files]
    elif source.is_file():
        items = []
        for lineno, line in enumerate(source.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.rstrip("\n").split("\t")
            if len(parts) > 2:
                raise ValueError(f"{source}:{lineno}: expected 'path' or 'id<TAB>path', got {len(parts)} fields")
            path = Path(parts[-1])
            path = path if path.is_absolute() else source.parent / path
            items.append((id_prefix + (parts[0] if len(parts) == 2 else path.stem), str(path)))
    else:
        raise FileNotFoundError(f"image input not found: {source} (expected a folder of images or a list file)")
    ids = [i for i, _ in items]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
        raise ValueError(f"{source}: duplicate image ids {dup}; give explicit ids in a list file")
    return items


class ImageFiles(Dataset):
    """(img_id, image (3,H,W) float RGB 0..255 or None, error or None)."""

    def __init__(self, items: list[tuple[str, str]], reader: ImageReader | None = None):
        self.items = items
        self.reader = reader or ImageReader()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        img_id, path = self.items[i]
        try:
            return img_id, self.reader.tensor(path), None
        except Exception as e:  # unreadable/corrupt image: reported by the caller, never fatal
            return img_id, None, f"{path}: {type(e).__name__}: {e}"


class UnreadableImagesError(ValueError):
    """Some input images could not be read (they were skipped; the others are in the store)."""


def _collate(batch):
    return batch


@dataclass
class ExtractStats:
    total: int = 0
    skipped_done: int = 0
    written: int = 0  # by this process
    stored: int = 0  # images in the final store afterwards (main process)
    errors: list[str] = field(default_factory=list)
    degenerate: list[str] = field(default_factory=list)  # ids of images stored with boxes under 1 px (e.g. 1x1 px)
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0


def class_dist_for(topk: int | str | None, num_columns: int) -> ClassDist | None:
    """What the store keeps of each box's class distribution, from ``class_distribution_topk``: None or 0 nothing;
    k the k most probable of the detector's ``num_columns`` (its classes and the background); ``"full"`` (or
    k >= ``num_columns``) every column."""
    if topk is None or topk == 0:
        return None
    if topk == "full" or (isinstance(topk, int) and topk >= num_columns):
        return ClassDist(num_columns, full=True)
    if not isinstance(topk, int) or isinstance(topk, bool) or topk < 0:
        raise ValueError(f"class_distribution_topk: {topk!r} is not null, 0 (off), a positive integer k, or full")
    return ClassDist(topk, full=False)


def _class_fields(d: Detections, dist: ClassDist | None) -> dict[str, torch.Tensor]:
    """``add`` arguments for the store's class distribution of one image's detections."""
    if dist is None:
        return {}
    if dist.full:
        return {"class_probs": d.class_probs.cpu()}
    probs, ids = d.class_probs.topk(dist.k, dim=1)  # (n, k), most probable first
    return {"class_probs": probs.cpu(), "class_ids": ids.cpu()}


def extract_to_store(
    detector: RegionDetector,
    items: list[tuple[str, str]],
    store_path: str | os.PathLike,
    batch_size: int = 32,
    num_workers: int = 0,
    feat_dtype: str = "float16",
    given_boxes: dict[str, list] | None = None,
    accelerator=None,
    progress: bool = True,
    metadata: dict | None = None,
    image_reader: ImageReader | None = None,
    class_topk: int | str | None = None,
) -> ExtractStats:
    """Run ``detector`` on every image not yet in ``store_path``. With several processes (``accelerator``),
    process r handles items r, r+W, ... into ``<store>.shards/rank{r}``; the main process merges at the end.
    ``class_topk``: keep each box's class distribution (``class_dist_for``)."""
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    device = accelerator.device if accelerator else torch.device("cpu")
    store_path = Path(store_path)
    shard_root = store_path.with_name(store_path.name + ".shards")
    meta = {**detector.metadata(), **(metadata or {})}
    class_dist = class_dist_for(class_topk, len(detector.object_classes) + 1)

    done: set[str] = set()
    if (store_path / "store.json").exists():
        done |= set(FeatureStore(store_path).image_ids)
    out_path = store_path if world == 1 else shard_root / f"rank{rank}"
    stats = ExtractStats(total=len(items))
    mine = items[rank::world]
    detector = detector.to(device).eval()
    start = time.perf_counter()
    with FeatureStoreWriter(out_path, detector.feat_dim, feat_dtype, metadata=meta, class_dist=class_dist) as writer:
        done |= writer.done_ids
        todo = [it for it in mine if it[0] not in done]
        stats.skipped_done = len(mine) - len(todo)
        loader = DataLoader(
            ImageFiles(todo, image_reader), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate
        )
        bar = tqdm(total=len(todo), unit="img", disable=not progress, desc=f"extract[{rank}]", dynamic_ncols=True)
        for batch in loader:
            good = [(i, im) for i, im, err in batch if err is None]
            for i, _, err in batch:
                if err is not None:
                    log.warning("skipping unreadable image %s (%s)", i, err)
                    stats.errors.append(err)
            if good:
                ims = [im.to(device) for _, im in good]
                boxes = None
                if given_boxes is not None:
                    missing = [i for i, _ in good if i not in given_boxes]
                    if missing:
                        raise KeyError(f"given boxes: no entry for image ids {missing[:5]}")
                    boxes = [torch.as_tensor(given_boxes[i], dtype=torch.float32).reshape(-1, 4) for i, _ in good]
                dets = detector.extract(ims, given_boxes=boxes)
                for (img_id, im), d in zip(good, dets):
                    # a box under one pixel wide or high pools from within a single pixel (all a 1x1 image has)
                    flat = int(((d.boxes[:, 2] - d.boxes[:, 0] < 1) | (d.boxes[:, 3] - d.boxes[:, 1] < 1)).sum())
                    if flat:
                        log.warning(
                            "image %s (%dx%d px): %d of %d boxes are under 1 pixel wide or high; their "
                            "region features carry no more than one pixel",
                            img_id,
                            im.shape[2],
                            im.shape[1],
                            flat,
                            len(d.boxes),
                        )
                        stats.degenerate.append(img_id)
                    writer.add(
                        img_id,
                        int(im.shape[1]),
                        int(im.shape[2]),
                        d.boxes.cpu(),
                        d.features.float().cpu(),
                        d.obj_ids.cpu(),
                        d.obj_conf.cpu(),
                        d.attr_ids.cpu(),
                        d.attr_conf.cpu(),
                        **_class_fields(d, class_dist),
                    )
                    stats.written += 1
            bar.update(len(batch))
            bar.set_postfix(img_s=f"{stats.written / max(time.perf_counter() - start, 1e-9):.1f}")
        bar.close()
    stats.seconds = time.perf_counter() - start
    if world > 1:
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            shards = sorted(shard_root.glob("rank*"))
            merge_stores(shards, store_path)
            shutil.rmtree(shard_root)
        accelerator.wait_for_everyone()
    if rank == 0:
        stats.stored = len(FeatureStore(store_path))
    return stats


def load_given_boxes(path: str | os.PathLike) -> dict[str, list]:
    """json ``{image_id: [[x1, y1, x2, y2], ...]}`` in pixels of the upright image (EXIF orientation applied, as
    ``ImageReader`` reads it and viewers show it)."""
    path = Path(path)
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected an object mapping image id -> list of [x1, y1, x2, y2]")
    for k, v in data.items():
        arr = np.asarray(v, dtype=np.float32)
        if arr.size and (arr.ndim != 2 or arr.shape[1] != 4):
            raise ValueError(f"{path}: field {k!r} has shape {arr.shape}, expected (n, 4)")
    return {str(k): v for k, v in data.items()}
