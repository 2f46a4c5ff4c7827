"""lxmert-features: look into feature stores and convert LXMERT TSV files.

lxmert-features inspect STORE
lxmert-features show STORE IMAGE_ID --image-dir DIR [--image FILE] --out boxes.png [--top N]
lxmert-features import-tsv TSV [TSV ...] --out STORE [--feat-dtype float16] [--feat-dim 2048]
lxmert-features export-tsv STORE --out FILE.tsv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from lxmert_repro.features.store import FeatureStore, RegionFeatures
from lxmert_repro.features.tsv import export_tsv, import_tsv

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def summarize(store: FeatureStore, sample: int = 2000) -> dict[str, Any]:
    """Images, boxes per image, feature dim/dtype, and feature statistics over a sample of images."""
    counts = store.num_boxes
    ids = store.image_ids
    rng = np.random.default_rng(0)
    pick = rng.choice(len(ids), size=min(sample, len(ids)), replace=False) if ids else []
    feats = [store[ids[i]].features.astype(np.float32) for i in pick]
    allf = np.concatenate(feats) if feats else np.zeros((0, store.feat_dim), np.float32)
    meta = store.metadata
    size = sum(f.stat().st_size for f in store.path.iterdir() if f.is_file())
    return {
        "path": str(store.path),
        "images": len(ids),
        "total_boxes": int(counts.sum()) if len(counts) else 0,
        "boxes_per_image": {
            "min": int(counts.min()) if len(counts) else 0,
            "mean": round(float(counts.mean()), 2) if len(counts) else 0.0,
            "max": int(counts.max()) if len(counts) else 0,
        },
        "feat_dim": store.feat_dim,
        "feat_dtype": store.feat_dtype,
        "feature_mean": round(float(allf.mean()), 5) if allf.size else None,
        "feature_std": round(float(allf.std()), 5) if allf.size else None,
        "object_classes": len(meta.get("object_classes", [])),
        "attribute_classes": len(meta.get("attribute_classes", [])),
        "detector": meta.get("detector"),
        "class_dist": store.class_dist.to_json() if store.class_dist else None,  # per-box class distributions kept
        "disk_mb": round(size / 2**20, 1),
    }


def find_image(image_id: str, image_dir: str | None, image: str | None) -> Path:
    if image:
        return Path(image)
    if not image_dir:
        raise SystemExit("show: give --image-dir (searched for IMAGE_ID.<ext>) or --image")
    d = Path(image_dir)
    for ext in IMAGE_EXTENSIONS:
        for name in (image_id, image_id.split("_")[-1]):  # allow an id prefix such as "train_12"
            if (d / f"{name}{ext}").is_file():
                return d / f"{name}{ext}"
    raise SystemExit(f"show: no image file for id {image_id!r} in {d} (tried {image_id}.<ext>)")


def draw_regions(
    r: RegionFeatures,
    image_path: Path,
    out: Path,
    object_classes: list[str],
    attribute_classes: list[str],
    top: int | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lxmert_repro.features.images import ImageReader

    pixels = ImageReader().array(image_path)  # upright, as extraction read it: the frame the boxes are in
    size = (pixels.shape[1], pixels.shape[0])
    if size != (r.img_w, r.img_h):
        print(f"warning: {image_path} is {size[0]}x{size[1]}, the store says {r.img_w}x{r.img_h}", file=sys.stderr)
    n = r.num_boxes if top is None else min(top, r.num_boxes)
    scale = max(1.0, 512 / max(size))
    fig, ax = plt.subplots(figsize=(size[0] * scale / 100, size[1] * scale / 100), dpi=100)
    ax.imshow(pixels)
    cmap = plt.get_cmap("tab10")
    for i in range(n):
        x1, y1, x2, y2 = r.boxes[i]
        obj = object_classes[r.obj_ids[i]] if r.obj_ids[i] < len(object_classes) else str(r.obj_ids[i])
        label = f"{obj} {r.obj_conf[i]:.2f}"
        if attribute_classes and r.attr_conf[i] > 0:
            attr = attribute_classes[r.attr_ids[i]] if r.attr_ids[i] < len(attribute_classes) else str(r.attr_ids[i])
            label = f"{attr} {label}"
        c = cmap(i % 10)
        ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=c, linewidth=1.5))
        ax.text(x1, y1, label, color="white", fontsize=7, va="bottom", bbox={"facecolor": c, "alpha": 0.7, "pad": 1})
    ax.set_axis_off()
    ax.set_title(f"{r.img_id}: {n} of {r.num_boxes} boxes", fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, bbox_inches="tight")
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="lxmert-features", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inspect", help="summary of a store")
    p.add_argument("store")
    p = sub.add_parser("show", help="draw an image's boxes with object/attribute labels")
    p.add_argument("store")
    p.add_argument("image_id")
    p.add_argument("--image-dir")
    p.add_argument("--image")
    p.add_argument("--out", required=True)
    p.add_argument("--top", type=int, default=None)
    p = sub.add_parser("import-tsv", help="LXMERT TSV feature files -> store (streaming, resumable)")
    p.add_argument("tsv", nargs="+")
    p.add_argument("--out", required=True)
    p.add_argument("--feat-dtype", default="float16", choices=["float16", "float32"])
    p.add_argument(
        "--feat-dim",
        type=int,
        default=None,
        help="the features' size (2048 for LXMERT's files); every record is checked against it. "
        "Default: the existing store's, else what the first records agree on",
    )
    p = sub.add_parser("export-tsv", help="store -> one LXMERT TSV file")
    p.add_argument("store")
    p.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    if args.cmd == "inspect":
        print(json.dumps(summarize(FeatureStore(args.store)), indent=2))
    elif args.cmd == "show":
        store = FeatureStore(args.store)
        r = store[args.image_id]
        meta = store.metadata
        draw_regions(
            r,
            find_image(args.image_id, args.image_dir, args.image),
            Path(args.out),
            meta.get("object_classes", []),
            meta.get("attribute_classes", []),
            args.top,
        )
        print(f"wrote {args.out} ({r.num_boxes} boxes)")
    elif args.cmd == "import-tsv":
        n = import_tsv(args.tsv, args.out, feat_dtype=args.feat_dtype, feat_dim=args.feat_dim)
        print(f"imported {n} images into {args.out}")
    elif args.cmd == "export-tsv":
        n = export_tsv(args.store, args.out)
        print(f"exported {n} images to {args.out}")


if __name__ == "__main__":
    main()
