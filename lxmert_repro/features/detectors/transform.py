"""Input transform of the bottom-up-attention VG detector as its PyTorch port runs it (MMF / transformers
``processing_image.py``: ``ResizeShortestEdge`` then ``Preprocess``), so that the same image gives the same tensor.

Differences from torchvision's ``GeneralizedRCNNTransform`` that change the detector's outputs:
- the resized size is ROUNDED (333x500 -> 600x901), torchvision floors it (600x900);
- order: resize (bilinear) -> subtract the pixel means -> pad (the detector flips RGB to BGR before: resizing
  is per channel, so the order of the flip changes no value);
- padding only up to the largest image of the batch (a single image is not padded at all), with 0 after
  normalisation; no rounding up to a multiple of 32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.image_list import ImageList


def rounded_resize_size(h: int, w: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The port's ``ResizeShortestEdge`` rule, in its own float order: short side to ``min_size`` unless the long
    side would pass ``max_size``, then each side rounded half up (``int(x + 0.5)``)."""
    scale = min_size / min(h, w)
    new_h, new_w = (min_size, scale * w) if h < w else (scale * h, min_size)
    if max(new_h, new_w) > max_size:
        rescale = max_size / max(new_h, new_w)
        new_h, new_w = new_h * rescale, new_w * rescale
    return int(new_h + 0.5), int(new_w + 0.5)


class RoundedResizeTransform(nn.Module):
    """List of (3, H, W) 0..255 images -> ``ImageList`` (B, 3, Hmax, Wmax) + resized sizes; targets' boxes
    scaled with their image."""

    def __init__(
        self,
        min_size: int = 600,
        max_size: int = 1000,
        pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717),
        pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
    ):
        super().__init__()
        self.min_size = min_size
        self.max_size = max_size
        self.register_buffer(
            "pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1), persistent=False
        )
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1), persistent=False)

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        return rounded_resize_size(h, w, self.min_size, self.max_size)

    def prepare_one(self, image: torch.Tensor) -> torch.Tensor:
        """(3, H, W) 0..255 -> (3, h, w) resized and normalised."""
        h, w = self.resized_size(*image.shape[-2:])
        x = F.interpolate(image[None].float(), (h, w), mode="bilinear", align_corners=False)[0]
        return (x - self.pixel_mean) / self.pixel_std

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        prepared = [self.prepare_one(im) for im in images]
        sizes = [tuple(p.shape[-2:]) for p in prepared]
        H, W = max(s[0] for s in sizes), max(s[1] for s in sizes)
        batch = prepared[0].new_zeros((len(prepared), 3, H, W))  # (B, 3, Hmax, Wmax), 0 = the port's pad value
        for b, p in zip(batch, prepared):
            b[:, : p.shape[1], : p.shape[2]].copy_(p)
        if targets is not None:
            targets = [dict(t) for t in targets]
            for t, im, (h, w) in zip(targets, images, sizes):
                sy, sx = h / im.shape[-2], w / im.shape[-1]
                t["boxes"] = t["boxes"] * torch.tensor(
                    [sx, sy, sx, sy], dtype=t["boxes"].dtype, device=t["boxes"].device
                )
        return ImageList(batch, [(int(h), int(w)) for h, w in sizes]), targets
