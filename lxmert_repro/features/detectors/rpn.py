"""RPN pieces: a head with detectron2's parameter names and detectron2's anchor order, plugged into
torchvision's RegionProposalNetwork (which does decoding, NMS and the training losses)."""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork


class D2AnchorGenerator(AnchorGenerator):
    """detectron2's cell anchors: size-major then aspect ratio (h/w), not rounded, offset 0.

    torchvision's own generator orders ratio-major and rounds; weights trained with detectron2 expect this order
    in their objectness/delta channels.
    """

    def generate_anchors(self, scales, aspect_ratios, dtype=torch.float32, device=torch.device("cpu")):
        anchors = []
        for size in scales:
            area = float(size) ** 2
            for ar in aspect_ratios:
                w = math.sqrt(area / float(ar))
                h = float(ar) * w
                anchors.append([-w / 2, -h / 2, w / 2, h / 2])
        return torch.tensor(anchors, dtype=dtype, device=device)


class ConvRPNHead(nn.Module):
    """3x3 conv (``hidden`` channels) -> ReLU -> 1x1 objectness (A) and 1x1 deltas (4A); detectron2 names."""

    def __init__(self, in_channels: int, num_anchors: int, hidden: int | None = None):
        super().__init__()
        hidden = hidden or in_channels
        self.conv = nn.Conv2d(in_channels, hidden, 3, padding=1)
        self.objectness_logits = nn.Conv2d(hidden, num_anchors, 1)
        self.anchor_deltas = nn.Conv2d(hidden, num_anchors * 4, 1)
        for layer in (self.conv, self.objectness_logits, self.anchor_deltas):
            nn.init.normal_(layer.weight, std=0.01)
            nn.init.zeros_(layer.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        logits, deltas = [], []
        for x in features:
            t = torch.relu(self.conv(x))
            logits.append(self.objectness_logits(t))  # (B, A, H, W)
            deltas.append(self.anchor_deltas(t))  # (B, 4A, H, W)
        return logits, deltas


def build_rpn(
    in_channels: int,
    anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    hidden: int | None = None,
    fg_iou: float = 0.7,
    bg_iou: float = 0.3,
    batch_size_per_image: int = 256,
    positive_fraction: float = 0.5,
    pre_nms_top_n_train: int = 12000,
    pre_nms_top_n_test: int = 6000,
    post_nms_top_n_train: int = 2000,
    post_nms_top_n_test: int = 300,
    nms_thresh: float = 0.7,
    detectron2_anchors: bool = True,
) -> RegionProposalNetwork:
    """Single-feature-map RPN (C4 or small backbones)."""
    gen_cls = D2AnchorGenerator if detectron2_anchors else AnchorGenerator
    gen = gen_cls(sizes=(tuple(anchor_sizes),), aspect_ratios=(tuple(aspect_ratios),))
    head = ConvRPNHead(in_channels, len(anchor_sizes) * len(aspect_ratios), hidden)
    return RegionProposalNetwork(
        gen,
        head,
        fg_iou_thresh=fg_iou,
        bg_iou_thresh=bg_iou,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=positive_fraction,
        pre_nms_top_n={"training": pre_nms_top_n_train, "testing": pre_nms_top_n_test},
        post_nms_top_n={"training": post_nms_top_n_train, "testing": post_nms_top_n_test},
        nms_thresh=nms_thresh,
    )
