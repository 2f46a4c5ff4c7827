"""LXMERT pretraining data: one (sentence, image) pair per item, with the four tasks' targets.

Per item (``PretrainDataset.__getitem__``), seeded by (seed, epoch, index) so a resumed run sees the
same masks: ITM negative (p 0.5, a sentence of a different image), MLM masking (15%, 80/10/10),
object-masking actions (15%, 80/10/10) with the replacement rows of other images, and the QA target
sampled from the soft label (ignored for mismatched pairs or when no label is in the answer table).
The collator (``PretrainCollator``) pads, builds both masks, applies the object masking in one
vectorised pass over the batch and returns an ``LxmertBatch``.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from lxmert_repro.data.answers import AnswerVocab
from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.data.collate_utils import alloc, copy_rows, feature_dtype, pad_text, padded_box_count
from lxmert_repro.data.masking import (
    BOX_RANDOM, BOX_ZERO, IGNORE_INDEX, OBJECT_MASK_SPLIT, mask_tokens, object_mask_ops, sample_answer,
)
from lxmert_repro.data.records import RecordTable
from lxmert_repro.data.regions import RegionSource
from lxmert_repro.features.store import FeatureStore


@dataclass
class PretrainItem:
    input_ids: np.ndarray  # (T,) int64, after MLM masking
    mlm_labels: np.ndarray  # (T,) int64, -100 where not masked
    itm_label: int  # 1 matched, 0 swapped sentence
    qa_label: int  # index into the pretraining answer table, -100 = none
    image_id: str
    boxes: np.ndarray  # (n, 4) float32 normalised
    features: np.ndarray  # (n, F) original features, store dtype
    box_ops: np.ndarray  # (n,) int8 BOX_* codes
    random_feats: np.ndarray  # (count of BOX_RANDOM, F) replacement rows, in box order
    obj_ids: np.ndarray  # (n,) int64
    obj_conf: np.ndarray  # (n,) float32
    attr_ids: np.ndarray  # (n,) int64
    attr_conf: np.ndarray  # (n,) float32
    class_probs: np.ndarray | None = None  # (n, k) float32, the store's class distributions (None: it keeps none)
    class_ids: np.ndarray | None = None  # (n, k) int64 (None: the k columns are the classes)


class PretrainDataset(Dataset):
    """(sentence, image) pairs from a prepared table (``input_ids``, ``image_id``, ``answers``,
    ``answer_scores`` columns) with features from the store."""

    def __init__(self, records: Any, store: FeatureStore | str | os.PathLike | RegionSource, *,
                 tokenizer: Any = None, pad_token_id: int | None = None, cls_token_id: int | None = None,
                 sep_token_id: int | None = None, mask_token_id: int | None = None, vocab_size: int | None = None,
                 answers: AnswerVocab | None = None, mlm_prob: float = 0.15, obj_mask_prob: float = 0.15,
                 itm_prob: float = 0.5, qa: bool = True, qa_start_epoch: int = 0, max_boxes: int | None = None,
                 seed: int = 0, obj_mask_split: tuple[float, float, float] = OBJECT_MASK_SPLIT) -> None:
        self.records = records if isinstance(records, RecordTable) else RecordTable(records)
        self.regions = store if isinstance(store, RegionSource) else RegionSource(store, max_boxes)
        if tokenizer is not None:
            pad_token_id, cls_token_id = tokenizer.pad_token_id, tokenizer.cls_token_id
            sep_token_id, mask_token_id, vocab_size = tokenizer.sep_token_id, tokenizer.mask_token_id, len(tokenizer)
        if None in (pad_token_id, cls_token_id, sep_token_id, mask_token_id, vocab_size):
            raise ValueError("PretrainDataset needs a tokenizer or all of pad/cls/sep/mask token ids and vocab_size")
        self.pad_token_id, self.mask_token_id, self.vocab_size = int(pad_token_id), int(mask_token_id), int(vocab_size)
        self.special_ids = np.array(sorted({int(pad_token_id), int(cls_token_id), int(sep_token_id), int(mask_token_id)}))
        self._special_lut = np.zeros(max(self.vocab_size, int(self.special_ids.max()) + 1), bool)
        self._special_lut[self.special_ids] = True
        self.answers = answers
        self.mlm_prob, self.obj_mask_prob, self.itm_prob = mlm_prob, obj_mask_prob, itm_prob
        self.obj_mask_split = tuple(obj_mask_split)
        object_mask_ops(0, np.random.default_rng(0), obj_mask_prob, self.obj_mask_split)  # bad split: fail now
        self.qa, self.qa_start_epoch = qa and answers is not None, qa_start_epoch
        self.seed, self.epoch = seed, 0
        self.image_codes = self.records.image_codes()  # (len,) int, same code = same image
        if itm_prob > 0 and len(self) and self.image_codes.max() == self.image_codes.min():
            raise ValueError("ITM negatives need sentences of at least two different images")
        self._answer_index = None if answers is None else answers._index

    def __len__(self) -> int:
        return len(self.records)

    def text_lengths(self) -> np.ndarray:
        """(len,) tokens of each example's own sentence, for length bucketing (an ITM negative swaps in
        another sentence, of any length, so pretraining batches stay more mixed than VQA's)."""
        return self.records.text_lengths()

    def set_epoch(self, epoch: int) -> None:
        """Masks depend on (seed, epoch, index): call before each epoch (the workers copy the dataset)."""
        self.epoch = int(epoch)

    def rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, int(index)])

    def _qa_label(self, answers: Sequence[str], scores: Sequence[float], rng: np.random.Generator) -> int:
        idx, sc = [], []
        for a, s in zip(answers, scores):
            j = self._answer_index.get(a, -1)
            if j >= 0:
                idx.append(j)
                sc.append(s)
        return sample_answer((np.array(idx, np.int64), np.array(sc, np.float64)), rng)

    def __getitem__(self, index: int) -> PretrainItem:
        rng = self.rng(index)
        rec = self.records.get(index)
        img_id = rec["image_id"]
        ids = np.asarray(rec["input_ids"], np.int64)
        itm = 1
        if self.itm_prob > 0 and rng.random() < self.itm_prob:
            itm = 0
            code = self.image_codes[index]
            while True:  # a sentence of a different image (the public code's rejection loop)
                j = int(rng.integers(len(self)))
                if self.image_codes[j] != code:
                    break
            ids = np.asarray(self.records.get(j, ("input_ids",))["input_ids"], np.int64)
        ids, mlm_labels = mask_tokens(ids, rng, mask_token_id=self.mask_token_id, vocab_size=self.vocab_size,
                                      special_ids=self.special_ids, prob=self.mlm_prob,
                                      special_lut=self._special_lut)
        qa_label = IGNORE_INDEX
        if self.qa and itm == 1 and self.epoch >= self.qa_start_epoch and rec.get("answers"):
            qa_label = self._qa_label(rec["answers"], rec["answer_scores"], rng)
        r = self.regions.get(img_id)
        ops = object_mask_ops(r.num_boxes, rng, self.obj_mask_prob, self.obj_mask_split)
        n_random = int((ops == BOX_RANDOM).sum())
        random_feats = self.regions.random_rows(n_random, rng, exclude_img_id=img_id)
        return PretrainItem(ids, mlm_labels, itm, qa_label, img_id, r.boxes, r.features, ops, random_feats,
                            r.obj_ids, r.obj_conf, r.attr_ids, r.attr_conf, r.class_probs, r.class_ids)


class PretrainCollator:
    """Pads text (to the batch max or ``pad_to``) and boxes (to the batch max or ``max_boxes``), applies
    the object masking, and returns an ``LxmertBatch`` with every pretraining target.

    ``feat_dtype``: dtype of ``visual_feats``/``feat_targets``; None keeps the store's (float16 for
    extracted features: lossless, half the memory traffic; the model casts to its own dtype).
    """

    def __init__(self, pad_token_id: int = 0, pad_to: int | None = None, max_boxes: int | None = None,
                 feat_dtype: str | None = None) -> None:
        self.pad_token_id, self.pad_to, self.max_boxes = pad_token_id, pad_to, max_boxes
        self.feat_dtype = feat_dtype

    def __call__(self, items: Sequence[PretrainItem]) -> LxmertBatch:
        B = len(items)
        input_ids, attn, token_types, mlm_labels = pad_text([it.input_ids for it in items], self.pad_token_id,
                                                            self.pad_to, [it.mlm_labels for it in items])
        counts = np.fromiter((it.box_ops.shape[0] for it in items), np.int64, B)
        N = padded_box_count(counts, [it.image_id for it in items], self.max_boxes)
        F = items[0].features.shape[1]
        box_mask = np.arange(N)[None, :] < counts[:, None]  # (B, N)

        dtype = feature_dtype(self.feat_dtype, items[0].features)
        feat_targets = alloc((B, N, F), dtype, fill=None)  # (B, N, F)
        visual_feats = alloc((B, N, F), dtype, fill=None)  # (B, N, F)
        for b, it in enumerate(items):  # per item: one cache-friendly copy (and conversion) from the store
            n = int(counts[b])
            copy_rows(feat_targets[b], it.features, n)
            copy_rows(visual_feats[b], it.features, n)
        ops = np.zeros((B, N), np.int8)
        ops[box_mask] = np.concatenate([it.box_ops for it in items])
        visual_feats[torch.from_numpy(ops == BOX_ZERO)] = 0.0
        rnd = ops == BOX_RANDOM
        if rnd.any():  # boolean indexing is row-major: per item, in box order, as random_feats are stored
            visual_feats[torch.from_numpy(rnd)] = torch.from_numpy(np.concatenate([it.random_feats for it in items])).to(dtype)

        def boxes_field(name: str, dtype: np.dtype, fill: float) -> torch.Tensor:
            out = np.full((B, N), fill, dtype)
            out[box_mask] = np.concatenate([getattr(it, name) for it in items])
            return torch.from_numpy(out)

        def class_field(name: str, dtype: np.dtype) -> torch.Tensor | None:
            """(B, N, k) of a per-box class-distribution field, zeros on padding; None when the store has none."""
            if getattr(items[0], name) is None:
                return None
            k = getattr(items[0], name).shape[1]
            out = np.zeros((B, N, k), dtype)
            out[box_mask] = np.concatenate([getattr(it, name) for it in items])
            return torch.from_numpy(out)

        boxes = np.zeros((B, N, 4), np.float32)
        boxes[box_mask] = np.concatenate([it.boxes for it in items])
        return LxmertBatch(
            input_ids=input_ids, attention_mask=attn, token_type_ids=token_types,
            visual_feats=visual_feats, visual_boxes=torch.from_numpy(boxes),
            visual_mask=torch.from_numpy(box_mask.astype(np.int64)),
            mlm_labels=mlm_labels,
            itm_labels=torch.tensor([it.itm_label for it in items], dtype=torch.long),
            obj_labels=boxes_field("obj_ids", np.int64, IGNORE_INDEX), obj_conf=boxes_field("obj_conf", np.float32, 0.0),
            attr_labels=boxes_field("attr_ids", np.int64, IGNORE_INDEX), attr_conf=boxes_field("attr_conf", np.float32, 0.0),
            feat_targets=feat_targets, masked_boxes=torch.from_numpy(ops > 0),
            qa_labels=torch.tensor([it.qa_label for it in items], dtype=torch.long),
            region_class_probs=class_field("class_probs", np.float32),
            region_class_ids=class_field("class_ids", np.int64),
            image_ids=[it.image_id for it in items],
        )
