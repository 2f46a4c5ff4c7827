"""The one image reader: 16-bit, palette/alpha/CMYK modes and EXIF orientation give the pixels a viewer shows,
the same in extraction, detector training and prediction."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image, ImageOps

from lxmert_repro.cli import CONFIG_DIR
from lxmert_repro.features.extract import ImageFiles
from lxmert_repro.features.images import ImageReader, image_reader_from_cfg, to_rgb
from lxmert_repro.features.train_detector import CocoDetection


def easy_vqa_image(i: int) -> np.ndarray:
    import easy_vqa

    path = Path(os.path.dirname(easy_vqa.__file__)) / "data" / "train" / "images" / f"{i}.png"
    return np.asarray(Image.open(path).convert("RGB"))


def coco_json(path: Path, file_name: str, width: int, height: int, boxes: list[list[float]]) -> Path:
    path.write_text(
        json.dumps(
            {
                "images": [{"id": 1, "file_name": file_name, "width": width, "height": height}],
                "annotations": [
                    {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                    for i, b in enumerate(boxes)
                ],
                "categories": [{"id": 1, "name": "thing"}],
            }
        )
    )
    return path


def three_loaders(tmp_path: Path, path: Path, reader: ImageReader | None = None) -> list[torch.Tensor]:
    """The (3, H, W) float image as extraction, detector training and prediction each read it."""
    from lxmert_repro.training import predict

    with Image.open(path) as im:
        w, h = ImageOps.exif_transpose(im).size  # the json states the upright size
    ann = coco_json(tmp_path / f"{path.stem}.json", path.name, w, h, [])
    kw = {} if reader is None else {"reader": reader}
    extract = ImageFiles([("x", str(path))], **kw)[0]
    assert extract[2] is None, extract[2]
    train = CocoDetection(str(ann), str(path.parent), **kw)[0][0]
    if hasattr(predict, "read_image"):  # the old code's prediction reader
        pred = predict.read_image(path)
    else:
        pred = (reader or ImageReader()).tensor(path)
    return [extract[1], train, pred]


def test_16_bit_png_reads_like_its_8_bit_version(tmp_path):
    grey8 = np.asarray(Image.fromarray(easy_vqa_image(3)).convert("L"))  # (64, 64) uint8
    Image.fromarray(grey8).save(tmp_path / "g8.png")
    Image.fromarray(grey8.astype(np.uint16) * 257).save(tmp_path / "g16.png")  # full 16-bit range
    Image.fromarray(grey8.astype(np.uint16) << 8).save(tmp_path / "g16shift.png")  # high byte only
    assert Image.open(tmp_path / "g16.png").mode.startswith("I")
    ref = three_loaders(tmp_path, tmp_path / "g8.png")
    for name in ("g16.png", "g16shift.png"):
        for got, want in zip(three_loaders(tmp_path, tmp_path / name), ref):
            assert got.shape == want.shape == (3, 64, 64)
            assert float((got - want).abs().max()) <= 1.0, name
    assert float(ref[0].std()) > 10  # a real picture, not a flat one


def png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit-per-sample PNG (colour type 0 grey, 2 RGB, 4 grey+alpha, 6 RGBA), written by hand: Pillow
    cannot write 16-bit colour PNGs."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def test_16_bit_colour_pngs_read_like_their_8_bit_versions(tmp_path):
    rgb8 = easy_vqa_image(7)
    alpha = np.full(rgb8.shape[:2], 255, np.uint8)
    alpha[:, 32:] = 0  # right half transparent: white under the default background
    (tmp_path / "rgb16.png").write_bytes(png16(rgb8.astype(np.uint16) * 257, 2))
    (tmp_path / "rgba16.png").write_bytes(png16(np.dstack([rgb8, alpha]).astype(np.uint16) * 257, 6))
    grey = rgb8[..., 0]
    (tmp_path / "la16.png").write_bytes(png16(np.dstack([grey, alpha]).astype(np.uint16) * 257, 4))
    want_rgba = np.where(alpha[..., None] > 0, rgb8, 255)
    want_la = np.where(alpha[..., None] > 0, np.repeat(grey[..., None], 3, axis=2), 255)
    for name, want in (("rgb16.png", rgb8), ("rgba16.png", want_rgba), ("la16.png", want_la)):
        for got in three_loaders(tmp_path, tmp_path / name):
            assert np.abs(got.permute(1, 2, 0).numpy() - want).max() <= 1, name


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I", "F"])
def test_high_bit_depth_modes_scale_to_8_bits(mode):
    grey = np.arange(256, dtype=np.float64).reshape(16, 16)
    if mode == "F":
        im = Image.fromarray((grey / 255).astype(np.float32), mode="F")
    elif mode == "I":
        im = Image.fromarray((grey * 257).astype(np.int32))
    else:
        im = Image.new(mode, (16, 16))
        im.frombytes((grey * 257).astype(">u2" if mode == "I;16B" else "<u2").tobytes())
    assert im.mode == mode
    out = to_rgb(im)
    assert out.dtype == np.uint8 and out.shape == (16, 16, 3)
    np.testing.assert_array_equal(out[..., 0], grey.astype(np.uint8))
    np.testing.assert_array_equal(out[..., 2], grey.astype(np.uint8))
    if mode == "F":
        with pytest.raises(ValueError, match=r"x.tif: float \(mode F\) pixel values span 0..510, expected 0..1"):
            to_rgb(Image.fromarray((grey * 2).astype(np.float32), mode="F"), where="x.tif")


def test_transparency_is_composited_on_the_configured_background(tmp_path):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        cfg = compose("extract", overrides=["input=x", "output=y", "image_reader.background=[0,0,255]"])
        assert compose("predict", overrides=["checkpoint=x", "questions=q"]).image_reader.background == [255, 255, 255]
    reader = image_reader_from_cfg(cfg)
    assert reader.background == (0, 0, 255)
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[:, :2, 3] = 255  # left half opaque red, right half transparent
    rgba[0, 3, 3] = 128  # half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.fromarray(rgba[..., [0, 3]], "LA").save(tmp_path / "la.png")
    pal = Image.fromarray(rgba[..., :3]).convert("P")
    pal.info["transparency"] = pal.getpixel((3, 3))
    pal.save(tmp_path / "p.png", transparency=pal.getpixel((3, 3)))
    for name in ("rgba.png", "la.png"):
        for got in three_loaders(tmp_path, tmp_path / name, reader):
            got = got.permute(1, 2, 0).numpy()
            assert got[0, 0].tolist() == ([200, 0, 0] if name == "rgba.png" else [200, 200, 200])
            assert got[1, 3].tolist() == [0, 0, 255]
            assert got[0, 3].tolist() == ([100, 0, 127] if name == "rgba.png" else [100, 100, 227])  # alpha 128/255
    assert ImageReader().array(tmp_path / "rgba.png")[1, 3].tolist() == [255, 255, 255]  # the default: white
    got = reader.array(tmp_path / "p.png")  # palette + tRNS: every pixel has the transparent index
    assert got[0, 0].tolist() == [0, 0, 255]
    with pytest.raises(ValueError, match=r"image_reader.background: expected 3 integers 0..255"):
        ImageReader([0, 0, 256])


def test_other_modes_match_pillows_rgb():
    rgb = easy_vqa_image(5)
    for mode in ("1", "L", "P", "CMYK", "YCbCr"):
        im = Image.fromarray(rgb).convert(mode)
        np.testing.assert_array_equal(to_rgb(im), np.asarray(im.convert("RGB")))


def exif_jpeg(path: Path, orientation: int = 6) -> np.ndarray:
    """A 96x64 (w x h) JPEG stored sideways with an EXIF orientation tag; returns its decoded stored pixels."""
    stored = np.zeros((64, 96, 3), np.uint8)
    stored[:, :48] = (250, 20, 20)  # left half red, right half blue, in the stored frame
    stored[:, 48:] = (20, 20, 250)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(stored).save(path, quality=95, exif=exif.tobytes())
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def test_exif_orientation_is_applied_everywhere(tmp_path):
    stored = exif_jpeg(tmp_path / "rot.jpg")
    upright = np.rot90(stored, k=-1)  # orientation 6: the viewer turns the stored picture 90 degrees clockwise
    for got in three_loaders(tmp_path, tmp_path / "rot.jpg"):
        assert tuple(got.shape) == (3, 96, 64)
        np.testing.assert_array_equal(got.permute(1, 2, 0).numpy(), upright)


def test_coco_size_must_be_the_upright_images(tmp_path):
    exif_jpeg(tmp_path / "rot.jpg")
    good = coco_json(tmp_path / "good.json", "rot.jpg", 64, 96, [[5, 50, 20, 40]])
    img, tgt, _ = CocoDetection(str(good), str(tmp_path))[0]
    assert tuple(img.shape) == (3, 96, 64) and tgt["boxes"].tolist() == [[5.0, 50.0, 25.0, 90.0]]
    rotated = coco_json(tmp_path / "rotated.json", "rot.jpg", 96, 64, [[50, 5, 40, 20]])
    with pytest.raises(
        ValueError,
        match=r"rotated.json: image id 1 \(rot.jpg\): fields 'width', 'height' are 96x64, "
        r"but the upright image \(EXIF orientation applied\) is 64x96",
    ):
        CocoDetection(str(rotated), str(tmp_path))[0]
    wrong = coco_json(tmp_path / "wrong.json", "rot.jpg", 100, 100, [])
    with pytest.raises(
        ValueError,
        match=r"wrong.json: image id 1 \(rot.jpg\): fields 'width', 'height' are 100x100, "
        r"expected the image's size 64x96",
    ):
        CocoDetection(str(wrong), str(tmp_path))[0]
