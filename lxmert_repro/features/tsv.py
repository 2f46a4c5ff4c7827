"""Import/export of LXMERT's original feature TSV files, streaming one line (one image) at a time.

Format (docs/faithful.md §1): tab-separated, no header, fields
``img_id, img_h, img_w, objects_id, objects_conf, attrs_id, attrs_conf, num_boxes, boxes, features``;
arrays are base64 of raw little-endian bytes: ids int64 (n,), confs float32 (n,), boxes float32 (n, 4) pixel
x1y1x2y2, features float32 (n, F) (the fields and decoding of airsplay/lxmert src/utils.py ``load_obj_tsv``).
Memory use is one line at a time, whatever the file size.

Two optional trailing fields (ours: the LXMERT files have none) carry each box's class distribution, which the
store keeps when they are there: ``class_ids`` int64 (n, k), the k most probable classes, most probable first, or
empty when the distribution is full (the k columns are the classes in order), and ``class_probs`` float32 (n, k);
k from the byte count. LXMERT's reader (``csv.DictReader`` with its 10 field names) ignores them.

Import checks every record (errors name file:line and the field): each array against ``num_boxes``, the feature
size against one dim for the whole import (given, the existing store's, or agreed by the first records: never
one record's byte count alone), finite values, boxes ordered and inside img_w x img_h.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np

from lxmert_repro.features.store import META_FILE, ClassDist, FeatureStore, FeatureStoreWriter, RegionFeatures
from lxmert_repro.io_utils import atomic_path

TSV_FIELDS = (
    "img_id",
    "img_h",
    "img_w",
    "objects_id",
    "objects_conf",
    "attrs_id",
    "attrs_conf",
    "num_boxes",
    "boxes",
    "features",
)
CLASS_FIELDS = ("class_ids", "class_probs")  # optional, after TSV_FIELDS


# A box may reach one pixel past the image edge (detectors clip to [0, w] or [0, w - 1]); further out, the
# record's img_h/img_w or boxes are wrong (e.g. swapped), and LXMERT's box features (coordinates / size) with them.
BOX_MARGIN_PX = 1.0


def _decode(b64: str, dtype: str, shape: tuple[int, ...], where: str, field: str) -> np.ndarray:
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as e:
        raise ValueError(f"{where}: field '{field}' is not valid base64 ({e})") from e
    want = int(np.prod(shape)) * np.dtype(dtype).itemsize
    if len(raw) != want:
        raise ValueError(
            f"{where}: field '{field}' has {len(raw)} bytes, expected {want} ({dtype} {shape}, "
            f"from num_boxes={shape[0]})"
        )
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(dtype)


def _decode_features(b64: str, n: int, feat_dim: int | None, dim_source: str, where: str) -> np.ndarray:
    """(n, F) float32; F = ``feat_dim`` when known (stated by ``dim_source``), else from the byte count."""
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError as e:
        raise ValueError(f"{where}: field 'features' is not valid base64 ({e})") from e
    per_box = 4 * n  # float32 bytes per feature dimension
    if n == 0:
        if raw:
            raise ValueError(f"{where}: field 'features' has {len(raw)} bytes, expected 0 (num_boxes=0)")
        return np.zeros((0, feat_dim or 0), np.float32)
    if len(raw) % per_box:
        raise ValueError(
            f"{where}: field 'features' has {len(raw)} bytes, not a whole number of float32 values "
            f"per box for num_boxes={n} (a multiple of {per_box} bytes)"
        )
    dim = len(raw) // per_box
    if feat_dim is not None and dim != feat_dim:
        raise ValueError(
            f"{where}: field 'features' has {len(raw)} bytes = {n} boxes x {dim} float32 values, "
            f"expected {n} x {feat_dim} = {per_box * feat_dim} bytes (feature dim {feat_dim}, "
            f"from {dim_source})"
        )
    return np.frombuffer(raw, dtype="<f4").reshape(n, dim).astype(np.float32)


def _decode_class_dist(rec: dict[str, str], n: int, where: str) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(class_probs (n, k), class_ids (n, k) or None for a full distribution) from the optional fields; k from the
    probabilities' byte count."""
    if "class_probs" not in rec:
        return None, None
    try:
        raw = base64.b64decode(rec["class_probs"], validate=True)
    except ValueError as e:
        raise ValueError(f"{where}: field 'class_probs' is not valid base64 ({e})") from None
    if (n == 0 and raw) or (n and (not raw or len(raw) % (4 * n))):
        raise ValueError(
            f"{where}: field 'class_probs' has {len(raw)} bytes, expected a positive multiple of {4 * n} "
            f"(float32 (num_boxes={n}, k))"
        )
    k = len(raw) // (4 * n) if n else 0
    probs = np.frombuffer(raw, dtype="<f4").reshape(n, k).astype(np.float32)
    ids = _decode(rec["class_ids"], "int64", (n, k), where, "class_ids") if rec["class_ids"] else None
    return probs, ids


def _int_field(rec: dict[str, str], key: str, where: str, minimum: int) -> int:
    try:
        value = int(rec[key])
    except ValueError:
        raise ValueError(f"{where}: field '{key}' is {rec[key][:20]!r}, expected an integer") from None
    if value < minimum:
        raise ValueError(f"{where}: field '{key}' is {value}, expected an integer >= {minimum}")
    return value


def _check_values(r: RegionFeatures, where: str) -> None:
    """Values the shapes cannot catch: ids, finite numbers, boxes ordered and inside the image."""
    for field, ids in (("objects_id", r.obj_ids), ("attrs_id", r.attr_ids)):
        if ids.size and ids.min() < 0:
            raise ValueError(f"{where}: field '{field}' has {int(ids.min())}, expected class indices >= 0")
    if r.class_ids is not None and r.class_ids.size and r.class_ids.min() < 0:
        raise ValueError(f"{where}: field 'class_ids' has {int(r.class_ids.min())}, expected class indices >= 0")
    for field, arr in (
        ("objects_conf", r.obj_conf),
        ("attrs_conf", r.attr_conf),
        ("boxes", r.boxes),
        ("features", r.features),
        ("class_probs", r.class_probs),
    ):
        if arr is not None and not np.isfinite(arr).all():
            raise ValueError(f"{where}: field '{field}' has non-finite values (NaN or inf)")
    if r.num_boxes:
        b = r.boxes
        bad = np.flatnonzero((b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]))
        if bad.size:
            raise ValueError(
                f"{where}: field 'boxes': box {bad[0]} is {b[bad[0]].tolist()}, expected x1 <= x2 "
                "and y1 <= y2 (pixel x1, y1, x2, y2)"
            )
        lo, hi = b.min(axis=0), b.max(axis=0)
        if (
            min(lo[0], lo[1]) < -BOX_MARGIN_PX
            or max(hi[0], hi[2]) > r.img_w + BOX_MARGIN_PX
            or max(hi[1], hi[3]) > r.img_h + BOX_MARGIN_PX
        ):
            raise ValueError(
                f"{where}: field 'boxes' spans x {lo[0]:g}..{max(hi[0], hi[2]):g}, "
                f"y {lo[1]:g}..{max(hi[1], hi[3]):g}, outside the image of img_w={r.img_w} x "
                f"img_h={r.img_h} pixels (boxes are pixel x1, y1, x2, y2)"
            )


def parse_tsv_line(
    line: str, where: str = "<tsv>", feat_dim: int | None = None, dim_source: str = "feat_dim"
) -> RegionFeatures:
    """One TSV line -> RegionFeatures (features float32 as stored in the file), every field checked against
    ``num_boxes`` and the feature dim (``feat_dim``; inferred from the byte count when None)."""
    parts = line.rstrip("\r\n").split("\t")
    if len(parts) not in (len(TSV_FIELDS), len(TSV_FIELDS) + len(CLASS_FIELDS)):
        raise ValueError(
            f"{where}: {len(parts)} tab-separated fields, expected {len(TSV_FIELDS)} {TSV_FIELDS}, or "
            f"{len(TSV_FIELDS) + len(CLASS_FIELDS)} with the class distribution fields {CLASS_FIELDS}"
        )
    rec = dict(zip(TSV_FIELDS + CLASS_FIELDS, parts))
    if not rec["img_id"]:
        raise ValueError(f"{where}: field 'img_id' is empty, expected an image id")
    h, w = _int_field(rec, "img_h", where, 1), _int_field(rec, "img_w", where, 1)
    n = _int_field(rec, "num_boxes", where, 0)
    r = RegionFeatures(
        img_id=rec["img_id"],
        img_h=h,
        img_w=w,
        obj_ids=_decode(rec["objects_id"], "int64", (n,), where, "objects_id"),
        obj_conf=_decode(rec["objects_conf"], "float32", (n,), where, "objects_conf"),
        attr_ids=_decode(rec["attrs_id"], "int64", (n,), where, "attrs_id"),
        attr_conf=_decode(rec["attrs_conf"], "float32", (n,), where, "attrs_conf"),
        boxes=_decode(rec["boxes"], "float32", (n, 4), where, "boxes"),
        features=_decode_features(rec["features"], n, feat_dim, dim_source, where),
    )
    r.class_probs, r.class_ids = _decode_class_dist(rec, n, where)
    _check_values(r, where)
    return r


def _records(
    path: Path, feat_dim: int | None = None, dim_source: str = "feat_dim"
) -> Iterator[tuple[str, RegionFeatures, bool]]:
    """(file:line, record, complete) of the non-blank lines; complete = the line has its line end (a file cut
    short ends inside a line: every line a TSV writer finishes has one)."""
    with open(path, newline="") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where, complete = f"{path}:{lineno}", line.endswith("\n")
            try:
                r = parse_tsv_line(line, where, feat_dim, dim_source)
            except ValueError as e:
                if complete:
                    raise
                raise ValueError(f"{e} (the file ends inside this line: truncated?)") from None
            yield where, r, complete


def iter_tsv(
    path: str | os.PathLike, feat_dim: int | None = None, dim_source: str = "feat_dim"
) -> Iterator[RegionFeatures]:
    """Stream the images of one TSV file (each record checked, errors name file:line)."""
    for _, r, _ in _records(Path(path), feat_dim, dim_source):
        yield r


def infer_feat_dim(tsv_paths: Sequence[Path], probe: int = 3) -> tuple[int, str]:
    """The feature dim of the first ``probe`` records with boxes, and where it comes from.

    Never one record's byte count alone when another can confirm it: a damaged (shortened) first record
    still decodes, to a smaller dim. A lone record cut off at the end of the file is refused.
    """
    seen: list[tuple[int, str, bool]] = []  # (dim, file:line, complete)
    for p in tsv_paths:
        for where, r, complete in _records(p):
            if r.num_boxes:
                seen.append((r.features.shape[1], where, complete))
            if len(seen) == probe:
                break
        if len(seen) == probe:
            break
    if not seen:
        raise ValueError(
            f"{', '.join(map(str, tsv_paths))}: no record has boxes; cannot infer the feature dim "
            "(pass feat_dim / --feat-dim)"
        )
    dims = [d for d, _, _ in seen]
    best = max(set(dims), key=dims.count)
    if dims.count(best) * 2 <= len(dims):  # no majority: 2 records that disagree
        listed = ", ".join(f"{w} has {d}" for d, w, _ in seen)
        raise ValueError(
            f"records disagree on the feature dim ({listed} float32 values per box); one is damaged, "
            "or pass feat_dim / --feat-dim"
        )
    if len(seen) == 1 and not seen[0][2]:
        raise ValueError(
            f"{seen[0][1]}: the only record with boxes ends without a line end (the file looks "
            f"truncated); its features would give feature dim {best}, with no other record to confirm "
            "it: pass feat_dim / --feat-dim if the record is complete"
        )
    return best, "records " + ", ".join(w for d, w, _ in seen if d == best)


def infer_class_dist(tsv_paths: Sequence[Path]) -> ClassDist | None:
    """The class distribution the first record with boxes carries (None: the files have no class fields)."""
    for p in tsv_paths:
        for _, r, _ in _records(p):
            if r.num_boxes:
                if r.class_probs is None:
                    return None
                return ClassDist(r.class_probs.shape[1], full=r.class_ids is None)
    return None


def format_tsv_line(r: RegionFeatures) -> str:
    def enc(a: np.ndarray, dtype: str) -> str:
        return base64.b64encode(np.ascontiguousarray(a, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()

    if "\t" in r.img_id or "\n" in r.img_id:
        raise ValueError(f"image id {r.img_id!r} contains a tab or newline; cannot be written to TSV")
    fields = [
        r.img_id,
        str(int(r.img_h)),
        str(int(r.img_w)),
        enc(r.obj_ids, "int64"),
        enc(r.obj_conf, "float32"),
        enc(r.attr_ids, "int64"),
        enc(r.attr_conf, "float32"),
        str(r.num_boxes),
        enc(r.boxes, "float32"),
        enc(r.features, "float32"),
    ]
    if r.class_probs is not None:
        fields += ["" if r.class_ids is None else enc(r.class_ids, "int64"), enc(r.class_probs, "float32")]
    return "\t".join(fields) + "\n"


def import_tsv(
    tsv_paths: Iterable[str | os.PathLike],
    store_path: str | os.PathLike,
    feat_dtype: str = "float16",
    metadata: dict | None = None,
    limit: int | None = None,
    feat_dim: int | None = None,
) -> int:
    """Append every image of the TSV files to a store (resumable: images already there are skipped).

    Returns the number of images added. Every record must have the feature dim ``feat_dim``; when None, that of
    an existing store, else the one the first records agree on (``infer_feat_dim``). The store keeps class
    distributions when the first record with boxes has the class fields (``infer_class_dist``; an existing
    store must keep the same); then every record needs them, of the same k. A bad record stops the import with its file:line; the images before it
    stay stored (each one is written whole or not at all).
    """
    tsv_paths = [Path(p) for p in tsv_paths]
    for p in tsv_paths:
        if not p.is_file():
            raise FileNotFoundError(f"TSV feature file not found: {p}")
    store_path = Path(store_path)
    if feat_dim is not None:
        if int(feat_dim) <= 0:
            raise ValueError(f"feat_dim: expected a positive integer, got {feat_dim!r}")
        dim, source = int(feat_dim), "feat_dim / --feat-dim"
    elif (store_path / META_FILE).exists():
        dim, source = FeatureStore(store_path).feat_dim, f"the existing store {store_path}"
    else:
        dim, source = infer_feat_dim(tsv_paths)
    class_dist = infer_class_dist(tsv_paths)  # an existing store without them refuses it; None: the store's
    added = seen = 0
    first_at: dict[str, str] = {}  # image id -> file:line of its record in these files
    writer: FeatureStoreWriter | None = None  # opened at the first good record: a bad first line writes nothing
    try:
        for p in tsv_paths:
            for where, r, _ in _records(p, dim, source):
                if limit is not None and seen >= limit:
                    return added
                seen += 1
                if writer is None:
                    writer = FeatureStoreWriter(store_path, dim, feat_dtype, metadata=metadata, class_dist=class_dist)
                    done = writer.done_ids
                if r.img_id in first_at:
                    raise ValueError(f"{where}: field 'img_id' {r.img_id!r} repeats the image of {first_at[r.img_id]}")
                first_at[r.img_id] = where
                if r.img_id in done:
                    continue
                try:
                    writer.add_region(r)
                except ValueError as e:
                    raise ValueError(f"{where}: {e}") from None
                added += 1
    finally:
        if writer is not None:
            writer.close()
    return added


def export_tsv(
    store_path: str | os.PathLike, tsv_path: str | os.PathLike, image_ids: Iterable[str] | None = None
) -> int:
    """Write a store (or the listed images) to one LXMERT TSV (features as float32); atomic. Returns #images."""
    store = FeatureStore(store_path)
    ids = store.image_ids if image_ids is None else list(image_ids)
    with atomic_path(tsv_path) as tmp, open(tmp, "w", newline="") as f:
        for img_id in ids:
            f.write(format_tsv_line(store[img_id]))
    store.close()
    return len(ids)
