"""Region-of-interest parts shared by every detector family: poolers, the class/box/attribute predictor and the
RoI head that trains them (torchvision's Matcher, sampler and BoxCoder underneath).

Class convention: background is the LAST class (index C), as in the detectron2-format VG weights; the attribute
head's "no attribute" is likewise last (index A). Object ids written to the store are 0..C-1.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.ops import RoIAlign, RoIPool, box_iou, clip_boxes_to_image


class SingleLevelPooler(nn.Module):
    """RoI pooling on one feature map (C4 detectors). Same call signature as torchvision's MultiScaleRoIAlign."""

    def __init__(
        self, output_size: int = 14, spatial_scale: float = 1 / 16, kind: str = "pool", sampling_ratio: int = 0
    ):
        super().__init__()
        if kind == "pool":
            self.op = RoIPool((output_size, output_size), spatial_scale)
        elif kind == "align":
            self.op = RoIAlign((output_size, output_size), spatial_scale, sampling_ratio, aligned=True)
        else:
            raise ValueError(f"pooler kind must be 'pool' or 'align', got {kind!r}")

    def forward(
        self, features: OrderedDict[str, torch.Tensor], boxes: list[torch.Tensor], image_shapes=None
    ) -> torch.Tensor:
        x = next(iter(features.values()))  # (B, C, H, W)
        return self.op(x, boxes)  # (R, C, s, s)


class MLPBoxHead(nn.Module):
    """Flatten -> fc6 -> ReLU -> fc7 -> ReLU (torchvision's TwoMLPHead, parameter names kept)."""

    def __init__(self, in_channels: int, pool_size: int, representation_size: int):
        super().__init__()
        self.fc6 = nn.Linear(in_channels * pool_size * pool_size, representation_size)
        self.fc7 = nn.Linear(representation_size, representation_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(start_dim=1)  # (R, C*s*s)
        return F.relu(self.fc7(F.relu(self.fc6(x))))  # (R, F)


class AttributePredictor(nn.Module):
    """Object classes (C+1, background last), class-specific box deltas (C*4) and, when ``num_attributes > 0``,
    bottom-up attention's attribute branch: embedding of the predicted (or, in training, true) class
    concatenated with the region feature -> Linear -> ReLU -> (A+1) attribute scores ("no attribute" last).
    Parameter names follow the detectron2-format VG weights (cls_score, bbox_pred, cls_embedding, fc_attr, attr_score).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        num_attributes: int = 0,
        cls_embed_dim: int = 256,
        attr_hidden_dim: int = 512,
    ):
        super().__init__()
        self.num_classes = num_classes
        self.num_attributes = num_attributes
        self.cls_score = nn.Linear(in_dim, num_classes + 1)
        self.bbox_pred = nn.Linear(in_dim, num_classes * 4)
        nn.init.normal_(self.cls_score.weight, std=0.01)
        nn.init.normal_(self.bbox_pred.weight, std=0.001)
        nn.init.zeros_(self.cls_score.bias)
        nn.init.zeros_(self.bbox_pred.bias)
        if num_attributes > 0:
            self.cls_embedding = nn.Embedding(num_classes + 1, cls_embed_dim)
            self.fc_attr = nn.Linear(in_dim + cls_embed_dim, attr_hidden_dim)
            self.attr_score = nn.Linear(attr_hidden_dim, num_attributes + 1)

    def forward(
        self, feats: torch.Tensor, attr_classes: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """feats (R, F) -> cls_logits (R, C+1), box_deltas (R, C*4), attr_logits (R, A+1) or None."""
        cls_logits = self.cls_score(feats)
        box_deltas = self.bbox_pred(feats)
        attr_logits = None
        if self.num_attributes > 0:
            if attr_classes is None:
                attr_classes = cls_logits.argmax(dim=1)  # as in the VG detector: argmax over all C+1 classes
            x = torch.cat([feats, self.cls_embedding(attr_classes)], dim=1)  # (R, F+E)
            attr_logits = self.attr_score(F.relu(self.fc_attr(x)))
        return cls_logits, box_deltas, attr_logits


class RegionRoIHeads(nn.Module):
    """pooler -> box_head (region feature, the vector stored per box) -> predictor.

    Training: proposals + ground truth are matched (IoU ``fg_iou``), sampled (``batch_size_per_image``,
    ``positive_fraction``) and give classification, smooth-L1 box and attribute losses.
    Inference: per-proposal features, class probabilities, regressed boxes and attribute probabilities.

    ``attr_softmax``: which softmax gives the attribute confidences (see ``ATTR_SOFTMAX``).
    """

    ATTR_SOFTMAX = {
        "all": "softmax over the A+1 scores, then the no-attribute column dropped",
        "attributes": "no-attribute column dropped, then softmax over the A real attributes",
    }

    def __init__(
        self,
        pooler: nn.Module,
        box_head: nn.Module,
        box_predictor: AttributePredictor,
        box_coder_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
        fg_iou: float = 0.5,
        bg_iou: float = 0.5,
        batch_size_per_image: int = 512,
        positive_fraction: float = 0.25,
        attr_loss_weight: float = 1.0,
        attr_softmax: str = "all",
    ):
        super().__init__()
        if attr_softmax not in self.ATTR_SOFTMAX:
            raise ValueError(f"roi.attr_softmax must be one of {sorted(self.ATTR_SOFTMAX)}, got {attr_softmax!r}")
        self.attr_softmax = attr_softmax
        self.pooler = pooler
        self.box_head = box_head
        self.box_predictor = box_predictor
        self.box_coder = det_utils.BoxCoder(tuple(box_coder_weights))
        self.matcher = det_utils.Matcher(fg_iou, bg_iou, allow_low_quality_matches=False)
        self.sampler = det_utils.BalancedPositiveNegativeSampler(batch_size_per_image, positive_fraction)
        self.attr_loss_weight = attr_loss_weight

    @property
    def num_classes(self) -> int:
        return self.box_predictor.num_classes

    def region_features(self, features, boxes: list[torch.Tensor], image_sizes) -> torch.Tensor:
        """(sum R_i, F) pooled feature for each box (boxes in the resized-image frame)."""
        return self.box_head(self.pooler(features, boxes, image_sizes))

    # ---- training -------------------------------------------------------------------------------------------
    def _sample(self, proposals: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]):
        C = self.num_classes
        out_props, labels, attrs, reg_targets = [], [], [], []
        for props, tgt in zip(proposals, targets):
            gt_boxes = tgt["boxes"]
            props = torch.cat([props.detach(), gt_boxes])  # ground truth always among the candidates
            if gt_boxes.numel() == 0:
                matched = torch.full((props.shape[0],), -1, dtype=torch.long, device=props.device)
            else:
                matched = self.matcher(box_iou(gt_boxes, props))  # (R,) gt index, -1 bg, -2 between
            fg = matched >= 0
            lab = torch.full_like(matched, C)
            lab[fg] = tgt["labels"][matched[fg]]
            att = torch.full_like(matched, -1)
            if "attributes" in tgt:
                att[fg] = tgt["attributes"][matched[fg]]
            binary = fg.long()
            binary[matched == -2] = -1
            pos, neg = self.sampler([binary])
            idx = torch.where(pos[0] | neg[0])[0]
            props, lab, att, m = props[idx], lab[idx], att[idx], matched[idx]
            reg = torch.zeros_like(props)
            fg_s = m >= 0
            if fg_s.any():
                reg[fg_s] = self.box_coder.encode_single(gt_boxes[m[fg_s]], props[fg_s])
            out_props.append(props)
            labels.append(lab)
            attrs.append(att)
            reg_targets.append(reg)
        return out_props, torch.cat(labels), torch.cat(attrs), torch.cat(reg_targets)

    def losses(self, features, proposals, image_sizes, targets) -> dict[str, torch.Tensor]:
        props, labels, attrs, reg_targets = self._sample(proposals, targets)
        feats = self.region_features(features, props, image_sizes)  # (R, F)
        cls_logits, box_deltas, attr_logits = self.box_predictor(feats, attr_classes=labels)
        loss_cls = F.cross_entropy(cls_logits, labels)
        fg = torch.where(labels < self.num_classes)[0]
        deltas = box_deltas.reshape(box_deltas.shape[0], -1, 4)[fg, labels[fg]]  # (P, 4)
        loss_box = F.smooth_l1_loss(deltas, reg_targets[fg], beta=1 / 9, reduction="sum") / max(labels.numel(), 1)
        out = {"loss_classifier": loss_cls, "loss_box_reg": loss_box}
        if attr_logits is not None:
            has_attr = fg[attrs[fg] >= 0]
            if has_attr.numel():
                loss_attr = F.cross_entropy(attr_logits[has_attr], attrs[has_attr])
            else:
                loss_attr = attr_logits.sum() * 0.0
            out["loss_attribute"] = self.attr_loss_weight * loss_attr
        return out

    # ---- inference ------------------------------------------------------------------------------------------
    def attribute_probs(self, attr_logits: torch.Tensor) -> torch.Tensor:
        """(R, A+1) scores, no-attribute last -> (R, A) confidences of the real attributes."""
        if self.attr_softmax == "attributes":
            return F.softmax(attr_logits[:, :-1], dim=1)
        return F.softmax(attr_logits, dim=1)[:, :-1]

    def predict(self, features, boxes: list[torch.Tensor], image_sizes) -> list[dict[str, torch.Tensor]]:
        """Per image: feats (R,F), class_probs (R,C+1) the softmax over every class and the background (last),
        obj_probs (R,C) its object columns, regressed (R,C,4) clipped, attr_probs (R,A) without "no attribute"
        (by ``attr_softmax``) or None."""
        feats = self.region_features(features, boxes, image_sizes)
        cls_logits, box_deltas, attr_logits = self.box_predictor(feats)
        probs = F.softmax(cls_logits, dim=1)  # (R, C+1)
        counts = [b.shape[0] for b in boxes]
        cat_boxes = torch.cat(boxes) if boxes else feats.new_zeros((0, 4))
        regressed = self.box_coder.decode_single(box_deltas, cat_boxes).reshape(-1, self.num_classes, 4)
        attr_probs = self.attribute_probs(attr_logits) if attr_logits is not None else None
        out = []
        for i, (f, p, r) in enumerate(zip(feats.split(counts), probs.split(counts), regressed.split(counts))):
            h, w = image_sizes[i]
            r = clip_boxes_to_image(r.reshape(-1, 4), (h, w)).reshape(-1, self.num_classes, 4)
            a = attr_probs.split(counts)[i] if attr_probs is not None else None
            out.append({"feats": f, "class_probs": p, "obj_probs": p[:, :-1], "regressed": r, "attr_probs": a})
        return out
