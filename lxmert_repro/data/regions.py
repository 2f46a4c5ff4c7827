"""Reading region features for datasets: boxes normalised by image size, random rows of other images.

Wraps ``lxmert_repro.features.store.FeatureStore`` (which opens its files lazily in each process), so a
dataset holding a ``RegionSource`` pickles cheaply into DataLoader workers.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from lxmert_repro.features.store import FeatureStore


@dataclass
class Regions:
    """One image's regions ready for a model: boxes in [0, 1], features in the store's dtype."""

    img_id: str
    boxes: np.ndarray  # (n, 4) float32, x1y1x2y2 / (w, h, w, h)
    features: np.ndarray  # (n, F) float16/float32
    obj_ids: np.ndarray  # (n,) int64
    obj_conf: np.ndarray  # (n,) float32
    attr_ids: np.ndarray  # (n,) int64
    attr_conf: np.ndarray  # (n,) float32
    class_probs: np.ndarray | None = None  # (n, k) float32, the store's class distributions (None: it keeps none)
    class_ids: np.ndarray | None = None  # (n, k) int64, their classes (None: all k columns, in class order)

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def normalize_boxes(boxes: np.ndarray, img_h: int, img_w: int) -> np.ndarray:
    """Pixel x1y1x2y2 -> divided by (w, h, w, h), clipped to [0, 1] (docs/faithful.md §3)."""
    if img_h <= 0 or img_w <= 0:
        raise ValueError(f"image size must be positive, got h={img_h}, w={img_w}")
    scale = np.array([img_w, img_h, img_w, img_h], np.float32)
    return np.clip(boxes.astype(np.float32, copy=False) / scale, 0.0, 1.0)


class RegionSource:
    """Per-image regions (optionally the first ``max_boxes``) and random feature rows from the store."""

    def __init__(self, store: FeatureStore | str | os.PathLike, max_boxes: int | None = None) -> None:
        self.store = store if isinstance(store, FeatureStore) else FeatureStore(store)
        self.max_boxes = max_boxes
        self._rows: np.ndarray | None = None  # per-process memmap of every feature row, opened lazily
        self._starts: np.ndarray | None = None

    @property
    def feat_dim(self) -> int:
        return self.store.feat_dim

    def __contains__(self, img_id: str) -> bool:
        return img_id in self.store

    def get(self, img_id: str) -> Regions:
        r = self.store[img_id]
        k = r.num_boxes if self.max_boxes is None else min(r.num_boxes, self.max_boxes)
        return Regions(img_id, normalize_boxes(r.boxes[:k], r.img_h, r.img_w), r.features[:k],
                       r.obj_ids[:k], r.obj_conf[:k], r.attr_ids[:k], r.attr_conf[:k],
                       None if r.class_probs is None else r.class_probs[:k],
                       None if r.class_ids is None else r.class_ids[:k])

    def _open_rows(self) -> None:
        if self._rows is None:
            counts = self.store.num_boxes
            self._starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)  # rows are appended in index order
            self._row_of = {img_id: i for i, img_id in enumerate(self.store.image_ids)}
            self._rows = self.store.features_memmap()

    def random_rows(self, k: int, rng: np.random.Generator, exclude_img_id: str | None = None) -> np.ndarray:
        """(k, F) features of boxes drawn uniformly from the whole store, never from ``exclude_img_id``."""
        if k == 0:
            return np.zeros((0, self.feat_dim), self.store.feat_dtype)
        self._open_rows()
        total = int(self._starts[-1])
        lo = hi = 0
        if exclude_img_id is not None and exclude_img_id in self._row_of:
            i = self._row_of[exclude_img_id]
            lo, hi = int(self._starts[i]), int(self._starts[i + 1])
        pool = total - (hi - lo)
        if pool <= 0:
            raise ValueError(f"feature store {self.store.path} has no box outside image {exclude_img_id!r}")
        r = rng.integers(0, max(pool, 1), size=k)
        r = np.where(r >= lo, r + (hi - lo), r)  # skip the excluded image's rows
        return np.asarray(self._rows[r])

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state.update(_rows=None, _starts=None)
        state.pop("_row_of", None)
        return state
