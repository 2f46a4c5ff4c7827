"""One detector class for every family: transform -> backbone -> RPN -> RoI heads -> box selection.

Input images are float tensors (3, H, W), RGB, 0..255. The detector converts to its weights' convention
(``bgr``, ``pixel_mean``/``pixel_std`` in 0..255 units, resize to ``min_size``/``max_size``) itself, so the
extraction loop never needs to know which weights it runs.

Batch invariance: ``extract`` runs each image alone through the network (no padding to the batch's largest
image, no kernel choices that depend on the batch size), so an image's regions do not depend on the other
images of its batch; only the per-class NMS of ``BottomUpSelection`` runs batched (exact boolean logic).
``stack_same_shape`` trades this for speed (small detectors): same-shape images then run as one batch.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.models.detection.transform import GeneralizedRCNNTransform

from lxmert_repro.features.box_selection import Selection
from lxmert_repro.features.detectors.heads import RegionRoIHeads


@dataclass
class Detections:
    """One image's regions, boxes in the ORIGINAL image's pixels."""

    boxes: torch.Tensor  # (n, 4) float x1y1x2y2
    features: torch.Tensor  # (n, F)
    obj_ids: torch.Tensor  # (n,) long, 0..C-1
    obj_conf: torch.Tensor  # (n,) float
    attr_ids: torch.Tensor  # (n,) long, 0..A-1 (0 when the detector has no attribute head)
    attr_conf: torch.Tensor  # (n,) float (0 when the detector has no attribute head)
    class_probs: torch.Tensor | None = None  # (n, C+1) softmax over the classes and the background (last)

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


class RegionDetector(nn.Module):
    def __init__(
        self,
        backbone: nn.Module,
        rpn: RegionProposalNetwork,
        roi_heads: RegionRoIHeads,
        selection: Callable[..., Selection],
        object_classes: list[str],
        attribute_classes: list[str] | None = None,
        min_size: int = 600,
        max_size: int = 1000,
        pixel_mean: tuple[float, float, float] = (102.9801, 115.9465, 122.7717),
        pixel_std: tuple[float, float, float] = (1.0, 1.0, 1.0),
        bgr: bool = True,
        size_divisible: int = 32,
        repool_final_boxes: bool = True,
        transform: nn.Module | None = None,
        stack_same_shape: bool = False,
    ):
        """``transform``: images (RGB or BGR by ``bgr``) -> ``(ImageList, targets)``; default torchvision's
        ``GeneralizedRCNNTransform`` from ``min_size``/``max_size``/``pixel_*``/``size_divisible``.
        ``stack_same_shape``: in ``extract``, run images of the same transformed shape as one batch (faster for
        small detectors; an image's outputs then depend on its batch at float rounding level, ~5e-7)."""
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.selection = selection
        self.object_classes = list(object_classes)
        self.attribute_classes = list(attribute_classes or [])
        if len(self.object_classes) != roi_heads.num_classes:
            raise ValueError(
                f"{len(self.object_classes)} object class names for a head with {roi_heads.num_classes} classes"
            )
        n_attr = roi_heads.box_predictor.num_attributes
        if n_attr and len(self.attribute_classes) != n_attr:
            raise ValueError(f"{len(self.attribute_classes)} attribute names for a head with {n_attr} attributes")
        self.bgr = bgr
        self.repool_final_boxes = repool_final_boxes
        self.stack_same_shape = stack_same_shape
        self.transform = (
            transform
            if transform is not None
            else GeneralizedRCNNTransform(
                min_size, max_size, list(pixel_mean), list(pixel_std), size_divisible=size_divisible
            )
        )

    @property
    def feat_dim(self) -> int:
        return int(self.roi_heads.box_predictor.cls_score.in_features)

    @property
    def has_attributes(self) -> bool:
        return self.roi_heads.box_predictor.num_attributes > 0

    def metadata(self) -> dict[str, Any]:
        return {"object_classes": self.object_classes, "attribute_classes": self.attribute_classes}

    def _prepare(self, images: list[torch.Tensor], targets=None):
        if self.bgr:
            images = [im.flip(0) for im in images]
        return self.transform(images, targets)

    def _features(self, image_tensors: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        feats = self.backbone(image_tensors)
        if isinstance(feats, torch.Tensor):
            feats = OrderedDict([("0", feats)])
        return feats

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]] | None = None):
        """Training (``targets`` given, module in train mode): dict of losses. Otherwise: ``extract(images)``."""
        if not self.training:
            return self.extract(images)
        if targets is None:
            raise ValueError("training forward needs targets (boxes, labels[, attributes])")
        targets = [{k: v for k, v in t.items()} for t in targets]
        image_list, targets = self._prepare(images, targets)
        feats = self._features(image_list.tensors)
        proposals, rpn_losses = self.rpn(image_list, feats, targets)
        roi_losses = self.roi_heads.losses(feats, proposals, image_list.image_sizes, targets)
        return {**rpn_losses, **roi_losses}

    def _backbone_and_proposals(self, images: list[torch.Tensor], with_proposals: bool):
        """Per image: its transformed ``ImageList`` (1 image), feature maps (batch of 1) and RPN proposals (None
        unless ``with_proposals``). Each image runs ALONE unless ``stack_same_shape``: convolution kernels pick
        other summation orders for other batch sizes (same-size images stacked: up to 5e-7 apart, measured)."""
        prepared = [self._prepare([im])[0] for im in images]
        groups: dict[tuple, list[int]] = {}
        for i, il in enumerate(prepared):
            key = (*il.tensors.shape[-2:], *il.image_sizes[0]) if self.stack_same_shape else (i,)
            groups.setdefault(key, []).append(i)
        feats: list = [None] * len(images)
        proposals: list = [None] * len(images)
        for idx in groups.values():
            il = ImageList(torch.cat([prepared[i].tensors for i in idx]), [prepared[i].image_sizes[0] for i in idx])
            f = self._features(il.tensors)
            props = self.rpn(il, f)[0] if with_proposals else [None] * len(idx)
            for j, i in enumerate(idx):
                feats[i] = OrderedDict((k, v[j : j + 1]) for k, v in f.items())
                proposals[i] = props[j]
        return prepared, feats, proposals

    @torch.no_grad()
    def extract(self, images: list[torch.Tensor], given_boxes: list[torch.Tensor] | None = None) -> list[Detections]:
        """Regions of each image. With ``given_boxes`` (original pixels), features/labels for exactly those boxes."""
        was_training = self.training
        self.eval()
        try:
            orig_sizes = [tuple(im.shape[-2:]) for im in images]
            prepared, feats, boxes = self._backbone_and_proposals(images, with_proposals=given_boxes is None)
            sizes = [il.image_sizes[0] for il in prepared]
            scales = [
                torch.tensor([s[1] / o[1], s[0] / o[0], s[1] / o[1], s[0] / o[0]], device=il.tensors.device)
                for s, o, il in zip(sizes, orig_sizes, prepared)
            ]
            if given_boxes is not None:
                boxes = [b.to(il.tensors).reshape(-1, 4) * sc for b, sc, il in zip(given_boxes, scales, prepared)]
            preds = [self.roi_heads.predict(f, [b], [s])[0] for f, b, s in zip(feats, boxes, sizes)]
            confs = None
            if given_boxes is None and hasattr(self.selection, "batch_confidences"):
                confs = self.selection.batch_confidences(boxes, [p["obj_probs"] for p in preds])
            out: list[Detections] = []
            for i, (p, b) in enumerate(zip(preds, boxes)):
                if given_boxes is not None:
                    obj_conf, obj_ids = p["obj_probs"].max(dim=1)
                    keep = torch.arange(b.shape[0], device=b.device)
                    sel_boxes, from_props = b, True
                else:
                    extra = {"max_conf": confs[i]} if confs is not None else {}
                    sel = self.selection(b, p["regressed"], p["obj_probs"], **extra)
                    keep, sel_boxes, obj_ids, obj_conf, from_props = (
                        sel.keep,
                        sel.boxes,
                        sel.obj_ids,
                        sel.obj_conf,
                        sel.from_proposals,
                    )
                region_feats = p["feats"][keep]
                if not from_props and self.repool_final_boxes:
                    region_feats = self.roi_heads.region_features(feats[i], [sel_boxes], [sizes[i]])
                if p["attr_probs"] is not None:
                    attr_conf, attr_ids = p["attr_probs"][keep].max(dim=1)
                else:
                    attr_ids = torch.zeros_like(keep)
                    attr_conf = torch.zeros(keep.shape[0], device=keep.device)
                class_probs = p["class_probs"][keep]
                out.append(
                    Detections(sel_boxes / scales[i], region_feats, obj_ids, obj_conf, attr_ids, attr_conf, class_probs)
                )
            for d, o in zip(out, orig_sizes):
                d.boxes[:, 0::2].clamp_(0, o[1])
                d.boxes[:, 1::2].clamp_(0, o[0])
            return out
        finally:
            self.train(was_training)
