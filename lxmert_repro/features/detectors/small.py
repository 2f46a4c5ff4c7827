"""A small configurable conv detector: tests and the default easy-VQA run (fast on 2 CPU cores)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import MultiScaleRoIAlign

from lxmert_repro.features.box_selection import BottomUpSelection
from lxmert_repro.features.detectors.detector import RegionDetector
from lxmert_repro.features.detectors.heads import AttributePredictor, MLPBoxHead, RegionRoIHeads
from lxmert_repro.features.detectors.rpn import build_rpn


class SmallConvBackbone(nn.Module):
    """Stages of [3x3 stride-2 conv, BN, ReLU, 3x3 conv, BN, ReLU]; stride 2**len(channels)."""

    def __init__(self, channels: Sequence[int] = (32, 64, 128)):
        super().__init__()
        layers, cin = [], 3
        for c in channels:
            layers += [
                nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
                nn.Conv2d(c, c, 3, padding=1, bias=False),
                nn.BatchNorm2d(c),
                nn.ReLU(inplace=True),
            ]
            cin = c
        self.body = nn.Sequential(*layers)
        self.out_channels = cin
        self.stride = 2 ** len(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, C, H/stride, W/stride)


def build_small_detector(
    object_classes: Sequence[str],
    attribute_classes: Sequence[str] = (),
    channels: Sequence[int] = (32, 64, 128),
    pool_size: int = 7,
    feat_dim: int = 256,
    rpn: dict | None = None,
    roi: dict | None = None,
    cls_embed_dim: int = 32,
    attr_hidden_dim: int = 128,
    selection=None,
    min_size: int = 64,
    max_size: int = 64,
    pixel_mean: Sequence[float] = (123.675, 116.28, 103.53),
    pixel_std: Sequence[float] = (58.395, 57.12, 57.375),
    bgr: bool = False,
    size_divisible: int = 32,
    repool_final_boxes: bool = True,
    stack_same_shape: bool = False,
) -> RegionDetector:
    backbone = SmallConvBackbone(channels)
    rpn_cfg = {"anchor_sizes": (16, 32, 64), "detectron2_anchors": False, **(rpn or {})}
    rpn_module = build_rpn(backbone.out_channels, **rpn_cfg)
    pooler = MultiScaleRoIAlign(["0"], pool_size, sampling_ratio=2)
    head = MLPBoxHead(backbone.out_channels, pool_size, feat_dim)
    predictor = AttributePredictor(
        feat_dim, len(object_classes), len(attribute_classes), cls_embed_dim, attr_hidden_dim
    )
    roi_heads = RegionRoIHeads(pooler, head, predictor, **(roi or {}))
    return RegionDetector(
        backbone,
        rpn_module,
        roi_heads,
        selection or BottomUpSelection(min_boxes=1, max_boxes=10),
        list(object_classes),
        list(attribute_classes),
        min_size=min_size,
        max_size=max_size,
        pixel_mean=tuple(pixel_mean),
        pixel_std=tuple(pixel_std),
        bgr=bgr,
        size_divisible=size_divisible,
        repool_final_boxes=repool_final_boxes,
        stack_same_shape=stack_same_shape,
    )
