"""Multi-image examples (NLVR2): one sentence, K images, a class label; batches carry (B, K, N, F) features.

Example b's image k lands at ``visual_feats[b, k]``; the model pairs it with sentence b (modeling/nlvr2.py)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.data.collate_utils import alloc, copy_rows, feature_dtype, pad_text, padded_box_count
from lxmert_repro.data.records import RecordTable
from lxmert_repro.data.regions import RegionSource
from lxmert_repro.features.store import FeatureStore

TRUE, FALSE = "True", "False"


@dataclass
class PairItem:
    input_ids: np.ndarray  # (T,) int64
    row: int  # the example's row in its split (its string id is the split's ``uid``)
    image_ids: list[str]  # (K,)
    boxes: list[np.ndarray]  # K x (n_k, 4) float32 normalised
    features: list[np.ndarray]  # K x (n_k, F)
    label: int  # 1 = True, 0 = False, -1 = unlabelled


def label_of(answers: Sequence[str] | None) -> int:
    """A prepared row's class: its answer "True" -> 1, "False" -> 0, none -> -1."""
    if not answers:
        return -1
    if answers[0] not in (TRUE, FALSE):
        raise ValueError(f"a pair-task example's answer must be {TRUE!r} or {FALSE!r}, got {answers[0]!r}")
    return int(answers[0] == TRUE)


class PairDataset(Dataset):
    """Rows of a prepared split with ``image_ids`` (K per example) and the answer "True" / "False"."""

    def __init__(self, records: Any, store: FeatureStore | str | os.PathLike | RegionSource, images_per_example: int = 2,
                 max_boxes: int | None = None) -> None:
        self.records = records if isinstance(records, RecordTable) else RecordTable(records)
        self.regions = store if isinstance(store, RegionSource) else RegionSource(store, max_boxes)
        self.k = images_per_example

    def __len__(self) -> int:
        return len(self.records)

    def text_lengths(self) -> np.ndarray:
        return self.records.text_lengths()

    def __getitem__(self, index: int) -> PairItem:
        rec = self.records.get(index, ("input_ids", "image_ids", "answers", "uid"))
        ids = list(rec["image_ids"] or ())
        if len(ids) != self.k:
            raise ValueError(f"example {rec['uid'] or index}: {len(ids)} images, the task takes {self.k} "
                             "(prepare the split with a pair-task reader)")
        regions = [self.regions.get(i) for i in ids]
        return PairItem(np.asarray(rec["input_ids"], np.int64), int(index), ids, [r.boxes for r in regions],
                        [r.features for r in regions], label_of(rec["answers"]))


class PairCollator:
    """Pads text to (B, T) and every image's boxes to one N: features (B, K, N, F), boxes (B, K, N, 4),
    box mask (B, K, N); ``class_labels`` (B,) when every item is labelled. ``blind``: features and boxes zeroed
    (the text-only baseline: same model, nothing to see)."""

    def __init__(self, pad_token_id: int = 0, pad_to: int | None = None, max_boxes: int | None = None,
                 feat_dtype: str | None = None, blind: bool = False) -> None:
        self.pad_token_id, self.pad_to, self.max_boxes, self.feat_dtype = pad_token_id, pad_to, max_boxes, feat_dtype
        self.blind = blind

    def __call__(self, items: Sequence[PairItem]) -> LxmertBatch:
        B, K = len(items), len(items[0].image_ids)
        input_ids, attn, token_types, _ = pad_text([it.input_ids for it in items], self.pad_token_id, self.pad_to)
        counts = np.array([[f.shape[0] for f in it.features] for it in items], np.int64)  # (B, K)
        N = padded_box_count(counts.reshape(-1), [i for it in items for i in it.image_ids], self.max_boxes)
        F = items[0].features[0].shape[1]
        feats = alloc((B, K, N, F), feature_dtype(self.feat_dtype, items[0].features[0]), fill=None)  # (B, K, N, F)
        boxes = np.zeros((B, K, N, 4), np.float32)
        for b, it in enumerate(items):
            for k in range(K):
                n = int(counts[b, k])
                copy_rows(feats[b, k], it.features[k], n)
                boxes[b, k, :n] = it.boxes[k]
        if self.blind:
            feats.zero_()
            boxes[:] = 0.0
        box_mask = np.arange(N)[None, None, :] < counts[:, :, None]  # (B, K, N)
        labels = [it.label for it in items]
        return LxmertBatch(
            input_ids=input_ids, attention_mask=attn, token_type_ids=token_types, visual_feats=feats,
            visual_boxes=torch.from_numpy(boxes), visual_mask=torch.from_numpy(box_mask.astype(np.int64)),
            class_labels=torch.tensor(labels, dtype=torch.long) if min(labels) >= 0 else None,
            question_ids=torch.tensor([it.row for it in items], dtype=torch.long),
            image_ids=[it.image_ids[0] for it in items],
        )
