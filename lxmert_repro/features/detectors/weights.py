"""Weight files for detectors: our format, detectron2-format VG weights (``frcnn-vg-finetuned``'s
``pytorch_model.bin``) and torchvision Faster R-CNN state dicts. Every tensor of a file is either loaded,
checked (the anchors), or named in the error; nothing is silently dropped except BatchNorm step counters.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from lxmert_repro.features.detectors.detector import RegionDetector
from lxmert_repro.io_utils import atomic_path

# detectron2 VG name prefix -> ours (longest first)
D2_PREFIXES = (
    ("proposal_generator.rpn_head.", "rpn.head."),
    ("roi_heads.res5.", "roi_heads.box_head.res5."),
    ("roi_heads.box_predictor.", "roi_heads.box_predictor."),
    ("backbone.", "backbone."),
)
D2_ANCHORS = "proposal_generator.anchor_generator.cell_anchors.0"


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    path = Path(path)
    if path.is_dir():
        for name in ("model.safetensors", "pytorch_model.bin"):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise FileNotFoundError(f"{path}: no model.safetensors or pytorch_model.bin in this directory")
    if not path.is_file():
        raise FileNotFoundError(f"detector weights not found: {path}")
    if path.suffix == ".safetensors":
        return load_file(str(path))
    sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):  # detectron2 .pth wrap the weights in a dict
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path}: expected a state dict (name -> tensor), got {type(sd).__name__}")
    return dict(sd)


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str, strict: bool = True) -> list[str]:
    """Load with shape checks and an error naming every missing/unexpected tensor. Returns the missing keys."""
    own = model.state_dict()
    unexpected = sorted(k for k in sd if k not in own)
    missing = sorted(k for k in own if k not in sd)
    bad = [
        f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in sd
        if k in own and sd[k].shape != own[k].shape
    ]
    problems = []
    if bad:
        problems.append("shape mismatch:\n  " + "\n  ".join(bad))
    if unexpected:
        problems.append(
            f"{len(unexpected)} tensors in the file that the model lacks:\n  " + "\n  ".join(unexpected[:50])
        )
    if missing and strict:
        problems.append(f"{len(missing)} model tensors missing from the file:\n  " + "\n  ".join(missing[:50]))
    if problems:
        raise ValueError(f"{source}: weights do not fit the detector config\n" + "\n".join(problems))
    model.load_state_dict(dict(sd), strict=False)
    return missing


# ---- detectron2 (frcnn-vg-finetuned) ----------------------------------------------------------------------------
def detectron2_to_ours(
    sd: Mapping[str, torch.Tensor], source: str = "<state dict>"
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """Rename detectron2-format keys; returns (our state dict, cell anchors tensor or None)."""
    out, anchors, unknown = {}, None, []
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue  # BatchNorm step counter; frozen BN has none
        if k == D2_ANCHORS:
            anchors = v
            continue
        for old, new in D2_PREFIXES:
            if k.startswith(old):
                out[new + k[len(old) :]] = v
                break
        else:
            unknown.append(k)
    if unknown:
        raise ValueError(f"{source}: {len(unknown)} tensors with names no part of vg_r101_c4 maps: {unknown[:20]}")
    return out, anchors


def ours_to_detectron2(model: RegionDetector) -> dict[str, torch.Tensor]:
    """Our vg_r101_c4 weights under detectron2 names (with the anchors), e.g. to export or test the loader."""
    out = {}
    for k, v in model.state_dict().items():
        for old, new in D2_PREFIXES:
            if k.startswith(new):
                out[old + k[len(new) :]] = v.clone()
                break
        else:
            raise ValueError(f"no detectron2 name for {k}")
    out[D2_ANCHORS] = model.rpn.anchor_generator.cell_anchors[0].clone()
    return out


def load_detectron2_weights(model: RegionDetector, path: str | os.PathLike) -> None:
    sd, anchors = detectron2_to_ours(read_state_dict(path), str(path))
    load_into(model, sd, str(path))
    if anchors is not None:
        ours = model.rpn.anchor_generator.cell_anchors[0]
        if anchors.shape != ours.shape or not torch.allclose(anchors.float(), ours.float(), atol=1e-3):
            raise ValueError(
                f"{path}: field '{D2_ANCHORS}' {tuple(anchors.shape)} differs from the anchors the config builds "
                f"{tuple(ours.shape)} (check rpn.anchor_sizes / rpn.aspect_ratios)"
            )
        model.rpn.anchor_generator.cell_anchors = [anchors.float()]


# ---- torchvision Faster R-CNN ----------------------------------------------------------------------------------
def torchvision_to_ours(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision's predictor has background FIRST and a box regression for it; ours has background last."""
    out = dict(sd)
    w, b = out.pop("roi_heads.box_predictor.cls_score.weight"), out.pop("roi_heads.box_predictor.cls_score.bias")
    out["roi_heads.box_predictor.cls_score.weight"] = torch.cat([w[1:], w[:1]])
    out["roi_heads.box_predictor.cls_score.bias"] = torch.cat([b[1:], b[:1]])
    out["roi_heads.box_predictor.bbox_pred.weight"] = out.pop("roi_heads.box_predictor.bbox_pred.weight")[4:]
    out["roi_heads.box_predictor.bbox_pred.bias"] = out.pop("roi_heads.box_predictor.bbox_pred.bias")[4:]
    return out


def ours_to_torchvision(model: RegionDetector) -> dict[str, torch.Tensor]:
    sd = {
        k: v.clone()
        for k, v in model.state_dict().items()
        if not k.startswith("roi_heads.box_predictor.") or k.split(".")[2] in ("cls_score", "bbox_pred")
    }
    w, b = sd["roi_heads.box_predictor.cls_score.weight"], sd["roi_heads.box_predictor.cls_score.bias"]
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.cat([w[-1:], w[:-1]])
    sd["roi_heads.box_predictor.cls_score.bias"] = torch.cat([b[-1:], b[:-1]])
    bw, bb = sd["roi_heads.box_predictor.bbox_pred.weight"], sd["roi_heads.box_predictor.bbox_pred.bias"]
    sd["roi_heads.box_predictor.bbox_pred.weight"] = torch.cat([torch.zeros_like(bw[:4]), bw])
    sd["roi_heads.box_predictor.bbox_pred.bias"] = torch.cat([torch.zeros_like(bb[:4]), bb])
    return sd


def load_torchvision_weights(model: RegionDetector, path: str | os.PathLike, strict: bool = True) -> list[str]:
    """Loads a torchvision Faster R-CNN state dict; with ``strict=False`` an attribute head not in the file is
    left at its initialisation (returned as the missing keys)."""
    return load_into(model, torchvision_to_ours(read_state_dict(path)), str(path), strict=strict)


# ---- ours -------------------------------------------------------------------------------------------------------
def save_weights(model: torch.nn.Module, path: str | os.PathLike) -> None:
    sd = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(sd, str(tmp))


def load_weights(model: RegionDetector, path: str | os.PathLike, fmt: str = "ours", strict: bool = True) -> None:
    if fmt == "ours":
        load_into(model, read_state_dict(path), str(path), strict=strict)
    elif fmt == "detectron2":
        load_detectron2_weights(model, path)
    elif fmt == "torchvision":
        load_torchvision_weights(model, path, strict=strict)
    else:
        raise ValueError(f"weights_format must be 'ours', 'detectron2' or 'torchvision', got {fmt!r}")
