"""torchvision's Faster R-CNN families as region extractors: their transform settings, backbone, RPN, RoI pooler and
box head, with our predictor (background last, optional attribute branch). The region feature is the box head's
output (1024-d for these models), re-pooled from the final boxes by default."""

from __future__ import annotations

from collections.abc import Sequence

import torchvision.models.detection as tvd

from lxmert_repro.features.box_selection import NmsLoopSelection
from lxmert_repro.features.detectors.detector import RegionDetector
from lxmert_repro.features.detectors.heads import AttributePredictor, RegionRoIHeads

FAMILIES = {
    "fasterrcnn_resnet50_fpn": tvd.fasterrcnn_resnet50_fpn,
    "fasterrcnn_resnet50_fpn_v2": tvd.fasterrcnn_resnet50_fpn_v2,
    "fasterrcnn_mobilenet_v3_large_fpn": tvd.fasterrcnn_mobilenet_v3_large_fpn,
    "fasterrcnn_mobilenet_v3_large_320_fpn": tvd.fasterrcnn_mobilenet_v3_large_320_fpn,
}


def build_torchvision_detector(
    family: str,
    object_classes: Sequence[str],
    attribute_classes: Sequence[str] = (),
    cls_embed_dim: int = 256,
    attr_hidden_dim: int = 512,
    roi: dict | None = None,
    selection=None,
    min_size: int | None = None,
    max_size: int | None = None,
    repool_final_boxes: bool = True,
    **tv_kwargs,
) -> RegionDetector:
    """``family``: one of FAMILIES. ``tv_kwargs`` go to torchvision's builder (e.g. rpn_post_nms_top_n_test)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown torchvision detector family {family!r}; expected one of {sorted(FAMILIES)}")
    tv = FAMILIES[family](weights=None, weights_backbone=None, num_classes=len(object_classes) + 1, **tv_kwargs)
    feat_dim = tv.roi_heads.box_predictor.cls_score.in_features
    predictor = AttributePredictor(
        feat_dim, len(object_classes), len(attribute_classes), cls_embed_dim, attr_hidden_dim
    )
    roi_heads = RegionRoIHeads(tv.roi_heads.box_roi_pool, tv.roi_heads.box_head, predictor, **(roi or {}))
    t = tv.transform
    return RegionDetector(
        tv.backbone,
        tv.rpn,
        roi_heads,
        selection or NmsLoopSelection(min_boxes=10, max_boxes=36),
        list(object_classes),
        list(attribute_classes),
        min_size=min_size or t.min_size[-1],
        max_size=max_size or t.max_size,
        pixel_mean=tuple(m * 255 for m in t.image_mean),
        pixel_std=tuple(s * 255 for s in t.image_std),
        bgr=False,
        size_divisible=t.size_divisible,
        repool_final_boxes=repool_final_boxes,
    )
