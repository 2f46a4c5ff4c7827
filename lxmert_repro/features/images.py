"""Image files -> upright 8-bit RGB pixels: the one image reader of extraction, detector training and prediction.

Why not ``Image.open(p).convert("RGB")``: Pillow's conversion clips 16-bit and 32-bit greyscale (modes I;16, I)
at 255 instead of scaling them (a 16-bit PNG comes out white), drops transparency onto black, and ignores the
EXIF orientation tag, so a phone photo is read sideways and its boxes are in the stored, rotated frame. Every
stage reads through ``ImageReader`` so the detector sees the same pixels in training, extraction and prediction.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from PIL import Image, ImageOps

# Modes that carry an alpha channel (or palette transparency, see ``_has_alpha``): composited on the background.
ORIENTATION_TAG = 0x0112  # EXIF Orientation: 1 upright, 2..8 mirrored and/or rotated
ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
# Integer modes wider than 8 bits, with the value that means white: 16-bit data in every byte order.
# Pillow also decodes 16-bit PNG/TIFF greyscale to mode "I" (int32) in some versions; its range is 16-bit too.
HIGH_BIT_MODES = {"I;16": 65535, "I;16B": 65535, "I;16L": 65535, "I;16N": 65535, "I": 65535}


class ImageReader:
    """Reads an image file as upright RGB (EXIF orientation applied), 8 bits per channel.

    ``background``: the RGB colour transparent pixels are composited onto (config ``image_reader.background``).
    High-bit-depth greyscale is scaled to 0..255 (16-bit value v -> round(v / 257), so an 8-bit image saved as
    16-bit reads back exactly); float images (mode F) are taken as 0..1.
    """

    def __init__(self, background: Sequence[int] = (255, 255, 255)):
        bg = list(background) if isinstance(background, (list, tuple)) else []
        if len(bg) != 3 or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in bg):
            raise ValueError(f"image_reader.background: expected 3 integers 0..255 (R, G, B), got {background!r}")
        self.background = tuple(bg)

    def __repr__(self) -> str:
        return f"ImageReader(background={list(self.background)})"

    def array(self, path: str | os.PathLike) -> np.ndarray:
        """(H, W, 3) uint8 RGB of the upright image."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such image file")
        with Image.open(path) as im:
            return to_rgb(im, self.background, where=str(path))

    def tensor(self, path: str | os.PathLike) -> torch.Tensor:
        """(3, H, W) float32 RGB in 0..255, the detectors' input convention."""
        return torch.from_numpy(self.array(path).astype(np.float32)).permute(2, 0, 1).contiguous()


def image_reader_from_cfg(cfg: DictConfig | None) -> ImageReader:
    """The app config's ``image_reader`` group (configs/image_reader/default.yaml); the defaults without one."""
    from hydra.utils import instantiate

    node = cfg.get("image_reader") if cfg is not None else None
    return instantiate(node, _convert_="all") if node is not None else ImageReader()


def _has_alpha(im: Image.Image) -> bool:
    return im.mode in ALPHA_MODES or (im.mode in ("P", "L", "RGB") and "transparency" in im.info)


def to_rgb(im: Image.Image, background: Sequence[int] = (255, 255, 255), where: str = "<image>") -> np.ndarray:
    """Any Pillow image -> (H, W, 3) uint8 RGB, upright, transparency composited on ``background``."""
    if im.getexif().get(ORIENTATION_TAG, 1) != 1:  # most files: upright already, no copy
        im = ImageOps.exif_transpose(im)
    if im.mode in HIGH_BIT_MODES:
        grey = np.asarray(im).astype(np.float64)  # I;16B is big-endian: asarray gives '>u2', astype makes it native
        top = HIGH_BIT_MODES[im.mode]
        if grey.size and (grey.min() < 0 or grey.max() > top):
            raise ValueError(
                f"{where}: {im.mode} pixel values span {grey.min():.0f}..{grey.max():.0f}, "
                f"expected 0..{top} (16-bit data)"
            )
        return _grey_to_rgb(grey * (255.0 / top))
    if im.mode == "F":
        grey = np.asarray(im).astype(np.float64)
        if grey.size and not (np.isfinite(grey).all() and grey.min() >= 0.0 and grey.max() <= 1.0):
            raise ValueError(
                f"{where}: float (mode F) pixel values span {np.nanmin(grey):g}..{np.nanmax(grey):g}, expected 0..1"
            )
        return _grey_to_rgb(grey * 255.0)
    if _has_alpha(im):
        rgba = np.asarray(im.convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:] / 255.0
        bg = np.asarray(background, np.float32)
        return np.rint(rgba[..., :3] * alpha + bg * (1.0 - alpha)).astype(np.uint8)
    try:
        return np.asarray(im.convert("RGB"))  # 1, L, P, CMYK, YCbCr, LAB, HSV, RGB: 8 bits per channel already
    except (ValueError, OSError) as e:
        raise ValueError(f"{where}: image mode {im.mode!r} cannot be converted to RGB ({e})") from e


def _grey_to_rgb(grey: np.ndarray) -> np.ndarray:
    """(H, W) float grey 0..255 -> (H, W, 3) uint8."""
    g = np.clip(np.rint(grey), 0, 255).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)
