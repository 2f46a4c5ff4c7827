#!/usr/bin/env python
"""easy-VQA (PyPI ``easy-vqa``) -> COCO-format detection json, one object per image.

Box: the shape's pixels, i.e. those differing from the image's background colour (the border's most common
colour). Class: the shape (circle / rectangle / triangle). Attribute: the colour (8 colours).
Labels come from the image's own questions when one states them ("what is the blue shape?" -> rectangle,
"what color is the shape?" -> blue); otherwise from pixels: colour = nearest palette colour (palette measured on
the images whose questions name the colour), shape = how much of its box the shape fills (rectangle ~1,
circle ~pi/4, triangle ~1/2). The agreement of the pixel rule with the question labels is printed.

    python scripts/easy_vqa_to_coco.py --out-dir data/easy_vqa_coco [--limit N]
writes ``train.json`` and ``test.json``; ``file_name`` is relative to easy_vqa's ``data/{split}/images``
(``--print-image-dirs`` shows them). Each annotation has ``attribute_id``; the json has an ``attributes`` list.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

SHAPES = ["circle", "rectangle", "triangle"]
COLORS = ["red", "green", "blue", "black", "gray", "teal", "brown", "yellow"]
FILL_RATIO = {"rectangle": 1.0, "circle": np.pi / 4, "triangle": 0.5}
BG_DIFF = 60  # summed |RGB - background| above which a pixel belongs to the shape


def data_dir() -> Path:
    import easy_vqa

    return Path(os.path.dirname(easy_vqa.__file__)) / "data"


def shape_mask(img: np.ndarray) -> np.ndarray:
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])  # (4*64, 3)
    bg = Counter(map(tuple, border)).most_common(1)[0][0]
    return np.abs(img.astype(np.int32) - np.array(bg, np.int32)).sum(-1) > BG_DIFF  # (H, W)


def labels_from_questions(qas: list[tuple[str, str]]) -> tuple[str | None, str | None]:
    shape = color = None
    for q, a in qas:
        m = re.match(r"what is the (\w+) shape\?", q)
        if m and a in SHAPES:
            shape, color = a, m.group(1) if m.group(1) in COLORS else color
        m = re.match(r"what colou?r is the (\w+)\?", q)
        if m and a in COLORS:
            color = a
            if m.group(1) in SHAPES:
                shape = m.group(1)
    return shape, color


def convert_split(split: str, limit: int | None) -> tuple[dict, list[tuple]]:
    root = data_dir() / split
    qs = json.loads((root / "questions.json").read_text())
    by_image: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for q, a, img_id in qs:
        by_image[int(img_id)].append((q, a))
    ids = sorted(int(p.stem) for p in (root / "images").glob("*.png"))[:limit]
    records = []
    for img_id in ids:
        img = np.asarray(Image.open(root / "images" / f"{img_id}.png").convert("RGB"))
        mask = shape_mask(img)
        ys, xs = np.nonzero(mask)
        if len(xs) == 0:
            print(f"warning: {split}/{img_id}.png: no shape pixels found; skipped", file=sys.stderr)
            continue
        x1, y1, x2, y2 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
        fill = mask[y1:y2, x1:x2].mean()
        mean_rgb = np.median(img[mask], axis=0)
        q_shape, q_color = labels_from_questions(by_image.get(img_id, []))
        records.append((img_id, img.shape, (x1, y1, x2, y2), fill, mean_rgb, q_shape, q_color))
    return root, records


def build_json(records, palette: dict[str, np.ndarray], stats: Counter) -> dict:
    images, anns = [], []
    for img_id, shape, (x1, y1, x2, y2), fill, rgb, q_shape, q_color in records:
        px_shape = min(SHAPES, key=lambda s: abs(FILL_RATIO[s] - fill))
        px_color = min(palette, key=lambda c: float(np.abs(palette[c] - rgb).sum()))
        for name, q, px in (("shape", q_shape, px_shape), ("color", q_color, px_color)):
            if q is not None:
                stats[f"{name}_checked"] += 1
                stats[f"{name}_agree"] += int(q == px)
        shp, col = q_shape or px_shape, q_color or px_color
        images.append({"id": img_id, "file_name": f"{img_id}.png", "height": int(shape[0]), "width": int(shape[1])})
        anns.append(
            {
                "id": len(anns) + 1,
                "image_id": img_id,
                "category_id": SHAPES.index(shp) + 1,
                "attribute_id": COLORS.index(col) + 1,
                "bbox": [x1, y1, x2 - x1, y2 - y1],
                "area": (x2 - x1) * (y2 - y1),
                "iscrowd": 0,
            }
        )
    return {
        "images": images,
        "annotations": anns,
        "categories": [{"id": i + 1, "name": s} for i, s in enumerate(SHAPES)],
        "attributes": [{"id": i + 1, "name": c} for i, c in enumerate(COLORS)],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="data/easy_vqa_coco")
    ap.add_argument("--limit", type=int, default=None, help="first N images per split (tests)")
    ap.add_argument("--print-image-dirs", action="store_true")
    args = ap.parse_args(argv)
    if args.print_image_dirs:
        for split in ("train", "test"):
            print(split, data_dir() / split / "images")
        return
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    splits = {s: convert_split(s, args.limit) for s in ("train", "test")}
    # palette: median colour of the shapes whose colour a question names (train split)
    samples: dict[str, list[np.ndarray]] = defaultdict(list)
    for *_, rgb, _, q_color in splits["train"][1]:
        if q_color:
            samples[q_color].append(rgb)
    missing = [c for c in COLORS if c not in samples]
    if missing:
        raise RuntimeError(f"no train image names the colour(s) {missing}; use more images (--limit)")
    palette = {c: np.median(np.stack(v), axis=0) for c, v in samples.items()}
    from lxmert_repro.io_utils import atomic_write_json

    for split, (root, records) in splits.items():
        stats: Counter = Counter()
        coco = build_json(records, palette, stats)
        atomic_write_json(out / f"{split}.json", coco, indent=None)
        print(
            f"{split}: {len(coco['images'])} images -> {out / (split + '.json')} (images in {root / 'images'}); "
            f"pixel rule vs questions: shape {stats['shape_agree']}/{stats['shape_checked']}, "
            f"colour {stats['color_agree']}/{stats['color_checked']}"
        )


if __name__ == "__main__":
    main()
