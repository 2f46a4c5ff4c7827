"""Pretraining and VQA loss formulas (docs/faithful.md §4 and §6), as plain functions of logits and targets.

Every function returns a scalar that stays in the autograd graph even when no target is present
(an exact 0 then), so a batch without e.g. masked tokens never produces NaN. None of them reads a value
back to the host (no ``.item()``, no ``if tensor.any()``): on a GPU that would stall the launch queue, and
under ``torch.compile`` it breaks the graph (CUDA graphs need one).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100  # label of a position without a loss (torch's cross_entropy default); the data uses it too


def _zero(like: torch.Tensor) -> torch.Tensor:
    return like.sum() * 0.0


def masked_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over positions whose label is not -100 (0 if none). logits (..., V), labels (...).

    Sum / count rather than ``reduction="mean"``, which is 0/0 = NaN when every label is ignored.
    """
    labels = labels.reshape(-1)
    total = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), labels, ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


def matching_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Image-text matching: 2-way cross-entropy, mean over the batch. logits (B, 2), labels (B,) 1 = match."""
    return masked_lm_loss(logits, labels)


def qa_loss(logits: torch.Tensor, labels: torch.Tensor, itm_labels: torch.Tensor | None = None) -> torch.Tensor:
    """Pretraining image QA: cross-entropy against one answer index, ignored (-100) for mismatched pairs.

    logits (B, A), labels (B,), itm_labels (B,) with 0 = the sentence was swapped (its answer is not about the image).
    """
    if itm_labels is not None:
        labels = labels.masked_fill(itm_labels == 0, IGNORE_INDEX)
    return masked_lm_loss(logits, labels)


def visual_denominator(
    visual_mask: torch.Tensor | None, masked_boxes: torch.Tensor | None, shape: torch.Size, mode: str
) -> torch.Tensor | float:
    """The number the visual losses are divided by: all real boxes (LXMERT: B x 36) or masked real boxes."""
    if mode == "all_boxes":
        return float(shape[0] * shape[1]) if visual_mask is None else visual_mask.float().sum().clamp(min=1.0)
    if mode == "masked_boxes":
        if masked_boxes is None:
            raise ValueError("visual_loss_denominator='masked_boxes' needs masked_boxes")
        m = masked_boxes.bool() if visual_mask is None else masked_boxes.bool() & visual_mask.bool()
        return m.float().sum().clamp(min=1.0)
    raise ValueError(f"unknown visual loss denominator {mode!r}")


def visual_label_loss(
    logits: torch.Tensor,  # (B, N, C)
    labels: torch.Tensor,  # (B, N) long, -100 on padding
    conf: torch.Tensor,  # (B, N) detector confidence of the label
    visual_mask: torch.Tensor | None = None,  # (B, N) 1 = real box
    masked_boxes: torch.Tensor | None = None,  # (B, N) bool
    masked_only: bool = False,
    denominator: str = "all_boxes",
) -> torch.Tensor:
    """Object / attribute label loss: CE against the detector's label weighted by its confidence.

    LXMERT: over ALL boxes, masked or not, summed and divided by all (real) boxes. Option: masked boxes only.
    """
    b, n = labels.shape
    ce = F.cross_entropy(
        logits.reshape(b * n, -1).float(), labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="none"
    ).view(b, n)
    weight = conf.float()
    if visual_mask is not None:
        weight = weight * visual_mask.float()
    if masked_only:
        if masked_boxes is None:
            raise ValueError("obj_attr_masked_only=True needs masked_boxes")
        weight = weight * masked_boxes.float()
    return (ce * weight).sum() / visual_denominator(visual_mask, masked_boxes, labels.shape, denominator)


def feature_regression_loss(
    pred: torch.Tensor,  # (K, F) predictions at the selected boxes, or (B, N, F) for all boxes
    targets: torch.Tensor,  # (B, N, F) original features
    masked_boxes: torch.Tensor,  # (B, N) bool
    visual_mask: torch.Tensor | None = None,
    denominator: str = "all_boxes",
) -> torch.Tensor:
    """SmoothL1 to the original feature, averaged over the feature dim, on masked boxes, / all real boxes."""
    sel = masked_boxes.bool() if visual_mask is None else masked_boxes.bool() & visual_mask.bool()  # (B, N)
    denom = visual_denominator(visual_mask, masked_boxes, masked_boxes.shape, denominator)
    if pred.dim() == 3:  # every box predicted: static shapes, the unselected boxes weigh 0
        per_box = F.smooth_l1_loss(pred.float(), targets.float(), reduction="none").mean(-1)  # (B, N)
        return torch.where(sel, per_box, 0.0).sum() / denom
    if pred.shape[0] == 0:
        return _zero(pred)
    per_box = F.smooth_l1_loss(pred.float(), targets[sel].float(), reduction="none").mean(-1)  # (K,)
    return per_box.sum() / denom


def check_vqa_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Every architecture's answer head scores the same (B, A) targets: one message when they do not fit."""
    if targets.shape != logits.shape:
        raise ValueError(f"vqa_targets has shape {tuple(targets.shape)}, logits {tuple(logits.shape)}")


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """VQA fine-tuning: BCE-with-logits against soft scores (mean) multiplied by the number of answers."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float()) * logits.shape[-1]
