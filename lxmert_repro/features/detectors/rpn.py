"""RPN pieces: a head with detectron2's parameter names, detectron2's anchor order and grid, and proposal
selection by objectness LOGITS, on top of torchvision's RegionProposalNetwork (decoding and the training losses)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import clip_boxes_to_image, nms


class D2AnchorGenerator(AnchorGenerator):
    """detectron2's cell anchors: size-major then aspect ratio (h/w), not rounded, offset 0.

    torchvision's own generator orders ratio-major and rounds; weights trained with detectron2 expect this order
    in their objectness/delta channels.

    ``stride`` (pixels per feature-map cell, 16 for C4): anchors at ``(x, y) * stride`` for every cell of the
    feature map, as detectron2 and the VG port place them. Without it, torchvision's rule ``image // grid`` is
    used, which is not the stride when the image is not a multiple of it (600x901 -> grid 38x57 -> 15, not 16).
    """

    def __init__(self, sizes, aspect_ratios, stride: int | None = None):
        super().__init__(sizes, aspect_ratios)
        self.stride = stride

    def forward(self, image_list, feature_maps: list[torch.Tensor]) -> list[torch.Tensor]:
        if self.stride is None:
            return super().forward(image_list, feature_maps)
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        strides = [[torch.empty((), dtype=torch.int64, device=device).fill_(self.stride)] * 2 for _ in feature_maps]
        self.set_cell_anchors(dtype, device)
        grid = self.grid_anchors([f.shape[-2:] for f in feature_maps], strides)  # (H*W*A, 4) per level
        return [torch.cat(grid) for _ in range(image_list.tensors.shape[0])]

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


class LogitRankedRPN(RegionProposalNetwork):
    """Proposal selection of detectron2 / the VG port (``find_top_rpn_proposals``): per image, the
    ``pre_nms_top_n`` anchors with the highest objectness LOGITS, boxes clipped to the image, boxes with a side
    <= ``min_box_side`` dropped, NMS at ``nms_thresh`` ranked by the logits, first ``post_nms_top_n`` kept.

    torchvision ranks its NMS by sigmoid probabilities, which tie in fp32 once logits pass ~16.6 (sigmoid = 1.0),
    and so keeps other boxes than the port for confident anchors. Single feature map only (C4 / small detectors).
    """

    def __init__(self, *args, min_box_side: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.min_box_side = min_box_side

    def filter_proposals(self, proposals, objectness, image_shapes, num_anchors_per_level):
        """proposals (B, N, 4), objectness (B*N, 1) logits -> per image (K, 4) boxes and (K,) logits."""
        logits_all = objectness.detach().reshape(proposals.shape[0], -1)  # (B, N)
        boxes_out, scores_out = [], []
        for boxes, logits, shape in zip(proposals.detach(), logits_all, image_shapes):
            logits, order = logits.sort(descending=True)
            k = min(self.pre_nms_top_n(), logits.shape[0])
            logits, boxes = logits[:k], clip_boxes_to_image(boxes[order[:k]], shape)
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            big = (w > self.min_box_side) & (h > self.min_box_side)
            if not bool(big.all()):
                boxes, logits = boxes[big], logits[big]
            keep = nms(boxes, logits, self.nms_thresh)[: self.post_nms_top_n()]
            boxes_out.append(boxes[keep])
            scores_out.append(logits[keep])
        return boxes_out, scores_out


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
    anchor_stride: int | None = None,
    min_box_side: float = 0.0,
) -> LogitRankedRPN:
    """Single-feature-map RPN (C4 or small backbones). ``anchor_stride``: the backbone's stride, for detectron2
    anchors placed as detectron2 places them (see ``D2AnchorGenerator``)."""
    sizes, ratios = (tuple(anchor_sizes),), (tuple(aspect_ratios),)
    gen = D2AnchorGenerator(sizes, ratios, anchor_stride) if detectron2_anchors else AnchorGenerator(sizes, ratios)
    head = ConvRPNHead(in_channels, len(anchor_sizes) * len(aspect_ratios), hidden)
    return LogitRankedRPN(
        gen,
        head,
        fg_iou_thresh=fg_iou,
        bg_iou_thresh=bg_iou,
        batch_size_per_image=batch_size_per_image,
        positive_fraction=positive_fraction,
        pre_nms_top_n={"training": pre_nms_top_n_train, "testing": pre_nms_top_n_test},
        post_nms_top_n={"training": post_nms_top_n_train, "testing": post_nms_top_n_test},
        nms_thresh=nms_thresh,
        min_box_side=min_box_side,
    )
