"""VQA fine-tuning / evaluation data: question, image regions, soft target vector, question id."""
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
from lxmert_repro.data.records import RecordTable
from lxmert_repro.data.regions import RegionSource
from lxmert_repro.features.store import FeatureStore


@dataclass
class VQAItem:
    input_ids: np.ndarray  # (T,) int64
    question_id: int
    image_id: str
    boxes: np.ndarray  # (n, 4) float32 normalised
    features: np.ndarray  # (n, F) store dtype
    target_index: np.ndarray  # (k,) int64 answer rows with a non-zero soft score
    target_score: np.ndarray  # (k,) float32 their scores (0.3 / 0.6 / 0.9 / 1)


class VQADataset(Dataset):
    """Questions from a prepared table (``input_ids``, ``image_id``, ``question_id``, ``answers``,
    ``answer_scores``); answers outside ``answers`` (the task's vocabulary) get no target.
    ``row_keys``: each item's ``question_id`` is its row in the table (tasks whose ids are strings, e.g. GQA,
    look the string up in the ``uid`` column)."""

    def __init__(self, records: Any, store: FeatureStore | str | os.PathLike | RegionSource, answers: AnswerVocab,
                 max_boxes: int | None = None, row_keys: bool = False) -> None:
        self.records = records if isinstance(records, RecordTable) else RecordTable(records)
        self.regions = store if isinstance(store, RegionSource) else RegionSource(store, max_boxes)
        self.answers = answers
        self.row_keys = row_keys

    def __len__(self) -> int:
        return len(self.records)

    def text_lengths(self) -> np.ndarray:
        """(len,) tokens of each question, for length bucketing."""
        return self.records.text_lengths()

    def __getitem__(self, index: int) -> VQAItem:
        rec = self.records.get(index, ("input_ids", "image_id", "question_id", "answers", "answer_scores"))
        idx, sc = [], []
        for a, s in zip(rec["answers"] or (), rec["answer_scores"] or ()):
            j = self.answers.index(a)
            if j >= 0 and s > 0:
                idx.append(j)
                sc.append(s)
        r = self.regions.get(rec["image_id"])
        qid = int(index) if self.row_keys else int(rec["question_id"])
        return VQAItem(np.asarray(rec["input_ids"], np.int64), qid, rec["image_id"],
                       r.boxes, r.features, np.array(idx, np.int64), np.array(sc, np.float32))


class VQACollator:
    """Pads text and boxes, builds both masks and the dense (B, A) soft target matrix.
    ``feat_dtype`` as in ``PretrainCollator`` (None = the store's dtype)."""

    def __init__(self, num_answers: int, pad_token_id: int = 0, pad_to: int | None = None,
                 max_boxes: int | None = None, feat_dtype: str | None = None) -> None:
        self.num_answers, self.pad_token_id, self.pad_to, self.max_boxes = num_answers, pad_token_id, pad_to, max_boxes
        self.feat_dtype = feat_dtype

    def __call__(self, items: Sequence[VQAItem]) -> LxmertBatch:
        B = len(items)
        input_ids, attn, token_types, _ = pad_text([it.input_ids for it in items], self.pad_token_id, self.pad_to)
        counts = np.fromiter((it.boxes.shape[0] for it in items), np.int64, B)
        N = padded_box_count(counts, [it.image_id for it in items], self.max_boxes)
        F = items[0].features.shape[1]
        box_mask = np.arange(N)[None, :] < counts[:, None]  # (B, N)
        feats = alloc((B, N, F), feature_dtype(self.feat_dtype, items[0].features), fill=None)  # (B, N, F)
        for b, it in enumerate(items):
            copy_rows(feats[b], it.features, int(counts[b]))
        boxes = np.zeros((B, N, 4), np.float32)
        boxes[box_mask] = np.concatenate([it.boxes for it in items])
        targets = np.zeros((B, self.num_answers), np.float32)  # (B, A)
        rows = np.repeat(np.arange(B), [len(it.target_index) for it in items])
        if len(rows):
            targets[rows, np.concatenate([it.target_index for it in items])] = np.concatenate([it.target_score for it in items])
        return LxmertBatch(
            input_ids=input_ids, attention_mask=attn, token_type_ids=token_types, visual_feats=feats,
            visual_boxes=torch.from_numpy(boxes), visual_mask=torch.from_numpy(box_mask.astype(np.int64)),
            vqa_targets=torch.from_numpy(targets),
            question_ids=torch.tensor([it.question_id for it in items], dtype=torch.long),
            image_ids=[it.image_id for it in items],
        )
