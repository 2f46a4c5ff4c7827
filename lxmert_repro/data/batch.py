"""The typed batch that flows from collation into the model.

One dataclass for pretraining and every downstream task: fields a task does not use stay ``None``.
Images: (B, N, ·) for one image per example (pretraining, VQA, GQA); (B, K, N, ·) for K images per example
(NLVR2: K = 2), which the task's model encodes as B·K (text, image) pairs.
The model's ``forward(**batch.model_inputs())`` signature and the collator agree on these names.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch


@dataclass
class LxmertBatch:
    # --- inputs (always present) ---
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long/bool, 1 = real token
    token_type_ids: torch.Tensor  # (B, T) long, zeros in every LXMERT task
    visual_feats: torch.Tensor  # (B, [K,] N, F) float, after object masking when pretraining
    visual_boxes: torch.Tensor  # (B, [K,] N, 4) float, x1y1x2y2 divided by image w/h, in [0, 1]
    visual_mask: torch.Tensor  # (B, [K,] N) long/bool, 1 = real box, 0 = padding

    # --- pretraining targets ---
    mlm_labels: torch.Tensor | None = None  # (B, T) long, -100 where not masked
    itm_labels: torch.Tensor | None = None  # (B,) long, 1 = matched pair, 0 = swapped sentence
    obj_labels: torch.Tensor | None = None  # (B, N) long, detector's object class, -100 on padding
    obj_conf: torch.Tensor | None = None  # (B, N) float, detector's object confidence
    attr_labels: torch.Tensor | None = None  # (B, N) long, detector's attribute class, -100 on padding
    attr_conf: torch.Tensor | None = None  # (B, N) float, detector's attribute confidence
    feat_targets: torch.Tensor | None = None  # (B, N, F) float, original (unmasked) features
    masked_boxes: torch.Tensor | None = None  # (B, N) bool, True where the box was selected for masking
    qa_labels: torch.Tensor | None = None  # (B,) long, index into the pretraining answer table, -100 = none
    region_class_probs: torch.Tensor | None = None  # (B, N, k) float, the store's class distribution per box
                                                    # (0 on padding); None when the store keeps none
    region_class_ids: torch.Tensor | None = None  # (B, N, k) long, their classes; None: the k columns are the classes

    # --- downstream targets / bookkeeping ---
    vqa_targets: torch.Tensor | None = None  # (B, A) float answer-head targets: VQA soft scores, GQA one-hot
    class_labels: torch.Tensor | None = None  # (B,) long class index (NLVR2: 1 = the statement is true)
    question_ids: torch.Tensor | None = None  # (B,) long, for prediction files (VQA: the question id; GQA and
                                              # NLVR2: the row in the split, whose string id the task looks up)
    image_ids: list[str] | None = None  # (B,) image ids, for reports and pictures

    MODEL_INPUTS = (
        "input_ids", "attention_mask", "token_type_ids", "visual_feats", "visual_boxes", "visual_mask",
    )
    PRETRAIN_TARGETS = (
        "mlm_labels", "itm_labels", "obj_labels", "obj_conf", "attr_labels", "attr_conf",
        "feat_targets", "masked_boxes", "qa_labels", "region_class_probs", "region_class_ids",
    )

    def to(self, device: torch.device | str) -> "LxmertBatch":
        """Move every tensor field to ``device`` (lists stay as they are)."""
        values: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v
        return LxmertBatch(**values)

    def pin_memory(self) -> "LxmertBatch":
        """Called by DataLoader(pin_memory=True) on custom batch types."""
        values: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            values[f.name] = v.pin_memory() if isinstance(v, torch.Tensor) else v
        return LxmertBatch(**values)

    def model_inputs(self) -> dict[str, torch.Tensor]:
        return {k: getattr(self, k) for k in self.MODEL_INPUTS}

    def pretrain_targets(self) -> dict[str, torch.Tensor | None]:
        return {k: getattr(self, k) for k in self.PRETRAIN_TARGETS}

    @property
    def batch_size(self) -> int:
        return int(self.input_ids.shape[0])
