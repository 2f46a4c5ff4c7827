"""Which detected regions become an image's features (docs/faithful.md §1). Two rules, both plain config classes.

Inputs (one image), class convention background-LAST as in detectron2 weights:
    proposals  (R, 4)     RPN proposals in image pixels (before box regression)
    regressed  (R, C, 4)  class-specific regressed boxes
    obj_probs  (R, C)     softmax class probabilities without the background column
Output: ``Selection(keep, boxes, obj_ids, obj_conf)``, ordered by confidence, highest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torchvision.ops import box_iou, nms


@dataclass
class Selection:
    keep: torch.Tensor  # (K,) long indices into the R proposals
    boxes: torch.Tensor  # (K, 4) the boxes to report, image pixels
    obj_ids: torch.Tensor  # (K,) long, object class of each kept box
    obj_conf: torch.Tensor  # (K,) float, its probability
    from_proposals: bool  # True when ``boxes`` are the pooled proposals themselves (no re-pooling needed)


class BottomUpSelection:
    """bottom-up-attention's rule (generate_tsv.py): for every class, NMS at ``nms_iou`` over the proposals
    scored by that class; each proposal's confidence is its best score among the classes where it survived;
    keep confidence >= ``conf_threshold``; clamp the count to [min_boxes, max_boxes] by confidence.
    The boxes reported are the proposals (before box regression), as in LXMERT's features.
    """

    def __init__(self, nms_iou: float = 0.3, conf_threshold: float = 0.2, min_boxes: int = 10, max_boxes: int = 100):
        if not 0 <= min_boxes <= max_boxes:
            raise ValueError(f"need 0 <= min_boxes <= max_boxes, got min_boxes={min_boxes}, max_boxes={max_boxes}")
        self.nms_iou = nms_iou
        self.conf_threshold = conf_threshold
        self.min_boxes = min_boxes
        self.max_boxes = max_boxes

    def batch_confidences(self, proposals: list[torch.Tensor], obj_probs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each proposal's confidence: its best score among the classes where it survives per-class NMS.

        The same result as ``torchvision.ops.nms`` per image and class (bottom-up's loop), computed for all
        classes of all images at once: every class ranks the SAME proposals, so one IoU matrix per image serves
        all 1,600 classes, and greedy NMS runs as R steps over a (images x classes, R) state instead of
        images x 1,600 NMS calls (torchvision's ``batched_nms`` loops over the groups at this size: ~0.5 s per
        image on a GPU, the bottleneck of extraction).
        """
        counts = [p.shape[0] for p in proposals]
        if not counts or max(counts) == 0:
            return [p.new_zeros(p.shape[0]) for p in proposals]
        B, R, C = len(counts), max(counts), obj_probs[0].shape[1]
        device = proposals[0].device
        over = torch.zeros(B, R, R, dtype=torch.bool, device=device)  # IoU > threshold, padded boxes overlap nothing
        scores = torch.full((B, R, C), -1.0, device=device)  # padded proposals rank last in every class
        for i, (p, s) in enumerate(zip(proposals, obj_probs)):
            over[i, : p.shape[0], : p.shape[0]] = box_iou(p, p) > self.nms_iou
            scores[i, : p.shape[0]] = s
        scores = scores.transpose(1, 2).reshape(B * C, R)  # one row per (image, class)
        order = torch.argsort(scores, dim=1, descending=True, stable=True)  # (B*C, R)
        rows = torch.arange(B * C, device=device)
        image = rows // C  # each row's image: its IoU matrix
        suppressed = torch.zeros(B * C, R, dtype=torch.bool, device=device)
        kept = torch.zeros(B * C, R, dtype=torch.bool, device=device)
        for rank in range(R):  # greedy NMS, every group at once: the rank-th best box of each group
            box = order[:, rank]  # (B*C,)
            alive = ~suppressed[rows, box]
            kept[rows, box] = alive
            suppressed |= over[image, box] & alive[:, None]  # (B*C, R)
        survived = torch.where(kept, scores, torch.zeros_like(scores)).reshape(B, C, R).amax(dim=1)  # (B, R)
        return [survived[i, :n] for i, n in enumerate(counts)]

    def __call__(
        self,
        proposals: torch.Tensor,
        regressed: torch.Tensor | None,
        obj_probs: torch.Tensor,
        max_conf: torch.Tensor | None = None,
    ) -> Selection:
        """``max_conf`` (R,): precomputed by ``batch_confidences``; computed here when None."""
        num = proposals.shape[0]
        if max_conf is None:
            max_conf = self.batch_confidences([proposals], [obj_probs])[0]  # (R,)
        order = torch.argsort(max_conf, descending=True, stable=True)
        n_pass = int((max_conf >= self.conf_threshold).sum())
        n = min(max(n_pass, self.min_boxes), self.max_boxes, num)
        keep = order[:n]
        obj_conf, obj_ids = obj_probs[keep].max(dim=1)
        return Selection(keep, proposals[keep], obj_ids, obj_conf, from_proposals=True)


class NmsLoopSelection:
    """transformers' research port of the VG detector (``frcnn-vg-finetuned``): each proposal's box is its
    regression for its best class; ONE class-agnostic NMS on those, trying ``nms_thresholds`` in order until the
    number kept (truncated to ``max_boxes``) is at least ``min_boxes``. If none fits, the last threshold's result
    is used as is. ``score_threshold`` (None in the port, which ignores its own threshold) optionally drops
    low-confidence boxes first.
    """

    def __init__(
        self,
        nms_thresholds: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        min_boxes: int = 10,
        max_boxes: int = 36,
        score_threshold: float | None = None,
    ):
        if not 0 <= min_boxes <= max_boxes:
            raise ValueError(f"need 0 <= min_boxes <= max_boxes, got min_boxes={min_boxes}, max_boxes={max_boxes}")
        self.nms_thresholds = list(nms_thresholds)
        if not self.nms_thresholds:
            raise ValueError("nms_thresholds must not be empty")
        self.min_boxes = min_boxes
        self.max_boxes = max_boxes
        self.score_threshold = score_threshold

    def __call__(self, proposals: torch.Tensor, regressed: torch.Tensor, obj_probs: torch.Tensor) -> Selection:
        obj_conf, obj_ids = obj_probs.max(dim=1)  # (R,)
        boxes = regressed[torch.arange(regressed.shape[0], device=regressed.device), obj_ids]  # (R, 4)
        candidates = torch.arange(boxes.shape[0], device=boxes.device)
        if self.score_threshold is not None:
            candidates = candidates[obj_conf >= self.score_threshold]
        keep = candidates
        for t in self.nms_thresholds:
            keep = candidates[nms(boxes[candidates], obj_conf[candidates], t)][: self.max_boxes]
            if keep.numel() >= self.min_boxes:
                break
        return Selection(keep, boxes[keep], obj_ids[keep], obj_conf[keep], from_proposals=False)
