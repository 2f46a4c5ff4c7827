"""Import/export of LXMERT's original feature TSV files, streaming one line (one image) at a time.

Format (spec section 5): tab-separated, no header, fields
``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features``;
arrays are base64 of raw little-endian bytes: ids int64 (n,), confs float32 (n,), boxes float32 (n, 4) pixel
x1y1x2y2, features float32 (n, F). Memory use is one line at a time, whatever the file size.
"""
from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from lxmert_repro.features.store import FeatureStore, FeatureStoreWriter, RegionFeatures
from lxmert_repro.io_utils import atomic_path

TSV_FIELDS = (
    "img_id", "img_h", "img_w", "objects_id", "objects_conf", "attrs_id", "attrs_conf", "num_boxes", "boxes", "features",
)


def _decode(b64: str, dtype: str, shape: tuple[int, ...], where: str, field: str) -> np.ndarray:
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as e:
        raise ValueError(f"{where}: field '{field}' is not valid base64 ({e})") from e
    itemsize = np.dtype(dtype).itemsize
    if shape[-1] == -1:  # feature dim inferred from the byte count
        denom = itemsize * shape[0]
        if denom == 0 or len(raw) % denom:
            raise ValueError(f"{where}: field '{field}' has {len(raw)} bytes, not a multiple of {shape[0]} x {itemsize}")
        shape = (shape[0], len(raw) // denom)
    want = int(np.prod(shape)) * itemsize
    if len(raw) != want:
        raise ValueError(f"{where}: field '{field}' has {len(raw)} bytes, expected {want} ({dtype} {shape})")
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype)


def parse_tsv_line(line: str, where: str = "<tsv>") -> RegionFeatures:
    """One TSV line -> RegionFeatures (features float32 as stored in the file)."""
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) != len(TSV_FIELDS):
        raise ValueError(f"{where}: {len(parts)} tab-separated fields, expected {len(TSV_FIELDS)} {TSV_FIELDS}")
    rec = dict(zip(TSV_FIELDS, parts))
    try:
        n = int(rec["num_boxes"])
        h, w = int(rec["img_h"]), int(rec["img_w"])
    except ValueError as e:
        raise ValueError(f"{where}: img_h/img_w/num_boxes must be integers ({e})") from e
    return RegionFeatures(
        img_id=rec["img_id"],
        img_h=h,
        img_w=w,
        obj_ids=_decode(rec["objects_id"], "int64", (n,), where, "objects_id"),
        obj_conf=_decode(rec["objects_conf"], "float32", (n,), where, "objects_conf"),
        attr_ids=_decode(rec["attrs_id"], "int64", (n,), where, "attrs_id"),
        attr_conf=_decode(rec["attrs_conf"], "float32", (n,), where, "attrs_conf"),
        boxes=_decode(rec["boxes"], "float32", (n, 4), where, "boxes"),
        features=_decode(rec["features"], "float32", (n, -1), where, "features"),
    )


def iter_tsv(path: str | os.PathLike) -> Iterator[RegionFeatures]:
    """Stream the images of one TSV file."""
    with open(path, "r", newline="") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                yield parse_tsv_line(line, where=f"{path}:{lineno}")


def format_tsv_line(r: RegionFeatures) -> str:
    def enc(a: np.ndarray, dtype: str) -> str:
        return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()

    if "\t" in r.img_id or "\n" in r.img_id:
        raise ValueError(f"image id {r.img_id!r} contains a tab or newline; cannot be written to TSV")
    return "\t".join([
        r.img_id, str(int(r.img_h)), str(int(r.img_w)),
        enc(r.obj_ids, "int64"), enc(r.obj_conf, "float32"), enc(r.attr_ids, "int64"), enc(r.attr_conf, "float32"),
        str(r.num_boxes), enc(r.boxes, "float32"), enc(r.features, "float32"),
    ]) + "\n"


def import_tsv(
    tsv_paths: Iterable[str | os.PathLike],
    store_path: str | os.PathLike,
    feat_dtype: str = "float16",
    metadata: dict | None = None,
    limit: int | None = None,
) -> int:
    """Append every image of the TSV files to a store (resumable: images already there are skipped).

    Returns the number of images added. The feature dim comes from the first image with boxes.
    """
    tsv_paths = [Path(p) for p in tsv_paths]
    for p in tsv_paths:
        if not p.is_file():
            raise FileNotFoundError(f"TSV feature file not found: {p}")
    writer: FeatureStoreWriter | None = None
    added = seen = 0
    try:
        for p in tsv_paths:
            for r in iter_tsv(p):
                if limit is not None and seen >= limit:
                    return added
                seen += 1
                if writer is None:
                    if r.num_boxes == 0:
                        raise ValueError(f"{p}: first image {r.img_id!r} has no boxes; cannot infer the feature dim")
                    writer = FeatureStoreWriter(store_path, r.features.shape[1], feat_dtype, metadata=metadata)
                    done = writer.done_ids
                if r.img_id in done:
                    continue
                writer.add_region(r)
                done.add(r.img_id)
                added += 1
    finally:
        if writer is not None:
            writer.close()
    return added


def export_tsv(store_path: str | os.PathLike, tsv_path: str | os.PathLike, image_ids: Iterable[str] | None = None) -> int:
    """Write a store (or the listed images) to one LXMERT TSV (features as float32); atomic. Returns #images."""
    store = FeatureStore(store_path)
    ids = store.image_ids if image_ids is None else list(image_ids)
    with atomic_path(tsv_path) as tmp, open(tmp, "w", newline="") as f:
        for img_id in ids:
            f.write(format_tsv_line(store[img_id]))
    store.close()
    return len(ids)
