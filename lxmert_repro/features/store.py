"""The region-feature store: one on-disk format for every stage (extract, TSV import, datasets).

Layout (a directory):

    store.json     format version, feat_dim, feat_dtype, metadata (object/attribute class names, detector)
    features.bin   raw (total_boxes, feat_dim) array of feat_dtype (float16 or float32), row-major
    boxes.bin      raw (total_boxes,) packed records: box f32[4] (pixel x1y1x2y2), obj_id i64, obj_conf f32,
                   attr_id i64, attr_conf f32 (40 bytes per box)
    classes.bin    optional (store.json "class_dist": {"k", "full"}): each box's class distribution, one record per box:
                   top-k class ids i32[k] + their probabilities f32[k], most probable first; or, when "full", the
                   probabilities f32[k] of every class in class order (k = the detector's classes + background)
    index.jsonl    one line per COMPLETE image: {"id", "h", "w", "start", "n"}; start = first row in the .bin files

A store with ``classes.bin`` is version 2 (version 1 + that file); one without stays version 1, the layout written
before class distributions existed, so older readers and writers keep working on it and refuse a store they could
not keep consistent.

Why flat numpy-layout files rather than HDF5:
- Crash safety is by construction. An image's rows are appended and flushed to the .bin files first, and only
  then its index line is appended. A killed writer leaves at most unindexed trailing bytes (the image in flight),
  which the next writer truncates away; earlier images are never touched. A resizable HDF5 dataset killed
  mid-write can leave the file's internal metadata inconsistent (the whole file unreadable).
- Any number of reader processes, no library lock (h5py serialises all calls in a process behind one global
  lock, and its handles must not cross ``fork``); DataLoader workers each open their own file descriptors lazily.
- The files are plain arrays: ``np.memmap`` opens them directly (``FeatureStore.features_memmap()``) for bulk,
  sequential work (export, statistics) and the format stays readable without this package.

Random access reads an image's two contiguous row blocks with ``os.preadv`` straight into fresh numpy arrays
(``access="pread"``, the default). That goes through the same OS page cache as a memory map but the cached
pages are not charged to the process (RSS stays flat whatever the store size: see benchmarks/bench_features.py),
and nothing is kept per image in memory beyond the index (a few dozen bytes per image). ``access="mmap"`` reads
through ``np.memmap`` instead; it is equally fast but its RSS grows with the part of the store touched.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lxmert_repro.io_utils import atomic_write_json

FORMAT_NAME = "lxmert-repro-features"
FORMAT_VERSION = 1
CLASS_DIST_VERSION = 2  # FORMAT_VERSION + classes.bin
META_FILE = "store.json"
FEATURES_FILE = "features.bin"
BOXES_FILE = "boxes.bin"
CLASSES_FILE = "classes.bin"
INDEX_FILE = "index.jsonl"
LOCK_FILE = ".writer.lock"
FEAT_DTYPES = ("float16", "float32")

# One packed record per box: everything except the feature vector.
BOX_RECORD = np.dtype(
    [("box", "<f4", (4,)), ("obj_id", "<i8"), ("obj_conf", "<f4"), ("attr_id", "<i8"), ("attr_conf", "<f4")]
)
assert BOX_RECORD.itemsize == 40


@dataclass(frozen=True)
class ClassDist:
    """Which class distribution a store keeps per box (ViLBERT's masked-region target: the detector's softmax over
    all its classes, background included). ``full``: every class's probability, in class order (``k`` = the number
    of columns); else the ``k`` most probable classes, ids and probabilities, most probable first."""

    k: int
    full: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k <= 0:
            raise ValueError(f"class distribution: k must be a positive integer, got {self.k!r}")

    @property
    def record(self) -> np.dtype:
        """One box's record in classes.bin."""
        if self.full:
            return np.dtype([("probs", "<f4", (self.k,))])
        return np.dtype([("ids", "<i4", (self.k,)), ("probs", "<f4", (self.k,))])

    def to_json(self) -> dict[str, Any]:
        return {"k": self.k, "full": self.full}

    @classmethod
    def from_json(cls, value: Any, where: str) -> ClassDist:
        if not isinstance(value, dict) or not isinstance(value.get("full"), bool):
            raise ValueError(f'{where}: field \'class_dist\' is {value!r}, expected {{"k": int, "full": bool}}')
        try:
            return cls(value.get("k"), value["full"])
        except ValueError as e:
            raise ValueError(f"{where}: field 'class_dist': {e}") from None


@dataclass
class RegionFeatures:
    """One image's regions. Arrays are numpy; ``features`` keeps the store's dtype. ``class_probs`` / ``class_ids``:
    the store's class distributions (None when it keeps none); ``class_ids`` is None for a full distribution (the
    columns are the classes)."""

    img_id: str
    img_h: int
    img_w: int
    boxes: np.ndarray  # (n, 4) float32 pixel x1y1x2y2
    features: np.ndarray  # (n, F) float16/float32
    obj_ids: np.ndarray  # (n,) int64
    obj_conf: np.ndarray  # (n,) float32
    attr_ids: np.ndarray  # (n,) int64
    attr_conf: np.ndarray  # (n,) float32
    class_probs: np.ndarray | None = None  # (n, k) float32
    class_ids: np.ndarray | None = None  # (n, k) int64, top-k stores only

    @property
    def num_boxes(self) -> int:
        return int(self.boxes.shape[0])


def _read_meta(path: Path) -> dict[str, Any]:
    meta_path = path / META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: not a feature store (missing {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{meta_path}: invalid JSON ({e})") from e
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{meta_path}: field 'format' is {meta.get('format')!r}, expected {FORMAT_NAME!r}")
    if meta.get("version") not in (FORMAT_VERSION, CLASS_DIST_VERSION):
        raise ValueError(
            f"{meta_path}: field 'version' is {meta.get('version')!r}, expected {FORMAT_VERSION} "
            f"(or {CLASS_DIST_VERSION} with class distributions)"
        )
    if (meta["version"] == CLASS_DIST_VERSION) != ("class_dist" in meta):
        raise ValueError(
            f"{meta_path}: version {meta['version']} "
            + ("needs a 'class_dist' field" if meta["version"] == CLASS_DIST_VERSION else "has no 'class_dist' field")
        )
    if "class_dist" in meta:
        ClassDist.from_json(meta["class_dist"], str(meta_path))
    if meta.get("feat_dtype") not in FEAT_DTYPES:
        raise ValueError(
            f"{meta_path}: field 'feat_dtype' is {meta.get('feat_dtype')!r}, expected one of {FEAT_DTYPES}"
        )
    if not isinstance(meta.get("feat_dim"), int) or meta["feat_dim"] <= 0:
        raise ValueError(f"{meta_path}: field 'feat_dim' is {meta.get('feat_dim')!r}, expected a positive int")
    return meta


def _class_dist(meta: dict[str, Any], path: Path) -> ClassDist | None:
    return ClassDist.from_json(meta["class_dist"], str(path / META_FILE)) if "class_dist" in meta else None


def _parse_index(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Complete index lines and the byte length they span (a torn last line is ignored)."""
    index_path = path / INDEX_FILE
    if not index_path.exists():
        return [], 0
    data = index_path.read_bytes()
    end = data.rfind(b"\n") + 1  # bytes after the last newline belong to a line a killed writer never finished
    entries = []
    for lineno, line in enumerate(data[:end].splitlines(), 1):
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{index_path}: line {lineno} is not valid JSON ({e})") from e
    return entries, end


class FeatureStore:
    """Read-only, lazily opened view of a store. Picklable: each process opens its own file descriptors.

    ``store[img_id] -> RegionFeatures``; ``img_id in store``; ``len(store)``; ``store.image_ids``.
    The index is a snapshot taken when first needed: images a concurrent writer adds later are not seen.
    """

    def __init__(self, path: str | os.PathLike, access: str = "pread"):
        if access not in ("pread", "mmap"):
            raise ValueError(f"access must be 'pread' or 'mmap', got {access!r}")
        self.path = Path(path)
        self.access = access
        self._meta = _read_meta(self.path)
        self.class_dist = _class_dist(self._meta, self.path)
        self._index_loaded = False
        self._pid: int | None = None
        self._fds: tuple[int, ...] | None = None  # features, boxes[, classes]
        self._mmaps: tuple[np.ndarray, ...] | None = None

    # ---- metadata -------------------------------------------------------------------------------------------
    @property
    def feat_dim(self) -> int:
        return int(self._meta["feat_dim"])

    @property
    def feat_dtype(self) -> str:
        return str(self._meta["feat_dtype"])

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._meta.get("metadata", {}))

    # ---- index ----------------------------------------------------------------------------------------------
    def _load_index(self) -> None:
        if self._index_loaded:
            return
        entries, _ = _parse_index(self.path)
        self._ids: list[str] = [e["id"] for e in entries]
        self._row = {img_id: i for i, img_id in enumerate(self._ids)}
        self._start = np.fromiter((e["start"] for e in entries), np.int64, len(entries))
        self._n = np.fromiter((e["n"] for e in entries), np.int64, len(entries))
        self._hw = np.array([(e["h"], e["w"]) for e in entries], np.int64).reshape(-1, 2)
        self._index_loaded = True

    def __len__(self) -> int:
        self._load_index()
        return len(self._ids)

    def __contains__(self, img_id: object) -> bool:
        self._load_index()
        return img_id in self._row

    def __iter__(self) -> Iterator[str]:
        self._load_index()
        return iter(self._ids)

    @property
    def image_ids(self) -> list[str]:
        self._load_index()
        return list(self._ids)

    @property
    def num_boxes(self) -> np.ndarray:
        """(len,) box count per image, in ``image_ids`` order."""
        self._load_index()
        return self._n.copy()

    @property
    def total_boxes(self) -> int:
        self._load_index()
        return int(self._n.sum())

    # ---- reading --------------------------------------------------------------------------------------------
    def _open(self) -> None:
        pid = os.getpid()
        if self._pid == pid:
            return
        # A fresh process (or first use): never reuse descriptors inherited through fork.
        self._fds, self._mmaps, self._pid = None, None, pid
        names = (FEATURES_FILE, BOXES_FILE) + ((CLASSES_FILE,) if self.class_dist else ())
        if self.access == "pread":
            self._fds = tuple(os.open(self.path / name, os.O_RDONLY) for name in names)
        else:
            self._mmaps = (self.features_memmap(), self._records_memmap(BOXES_FILE, BOX_RECORD))
            if self.class_dist:
                self._mmaps += (self._records_memmap(CLASSES_FILE, self.class_dist.record),)

    def _count_rows(self) -> int:
        self._load_index()
        return int(self._start[-1] + self._n[-1]) if len(self._ids) else 0

    def features_memmap(self) -> np.ndarray:
        """(total_boxes, F) read-only memmap of every feature row (image i: rows start..start+n)."""
        rows = self._count_rows()
        if rows == 0:
            return np.zeros((0, self.feat_dim), self.feat_dtype)
        return np.memmap(self.path / FEATURES_FILE, self.feat_dtype, "r", shape=(rows, self.feat_dim))

    def _records_memmap(self, name: str, record: np.dtype) -> np.ndarray:
        rows = self._count_rows()
        if rows == 0:
            return np.zeros((0,), record)
        return np.memmap(self.path / name, record, "r", shape=(rows,))

    def _read_rows(self, start: int, n: int) -> list[np.ndarray]:
        """Rows start..start+n of each open file: features (n, F), box records (n,)[, class records (n,)]."""
        if self._fds is None:
            return [np.array(m[start : start + n]) for m in self._mmaps]  # type: ignore[union-attr]
        out = [np.empty((n, self.feat_dim), self.feat_dtype), np.empty((n,), BOX_RECORD)]
        if self.class_dist:
            out.append(np.empty((n,), self.class_dist.record))
        for fd, arr in zip(self._fds, out):
            want = arr.nbytes
            got = os.preadv(fd, [arr.reshape(-1).view(np.uint8)], start * (want // n)) if want else 0
            if got != want:
                raise OSError(f"{self.path}: short read ({got} of {want} bytes); the store is truncated")
        return out

    def _open_row(self, img_id: str) -> int:
        """The index row of ``img_id``, with the data files open; KeyError naming the store if it is absent."""
        self._load_index()
        try:
            i = self._row[img_id]
        except KeyError:
            raise KeyError(f"image id {img_id!r} not in feature store {self.path}") from None
        self._open()
        return i

    def __getitem__(self, img_id: str) -> RegionFeatures:
        i = self._open_row(img_id)
        n = int(self._n[i])
        feats, recs, *classes = self._read_rows(int(self._start[i]), n)
        class_probs = class_ids = None
        if classes:
            class_probs = np.ascontiguousarray(classes[0]["probs"])
            if not self.class_dist.full:  # type: ignore[union-attr]
                class_ids = classes[0]["ids"].astype(np.int64)
        return RegionFeatures(
            img_id=img_id,
            img_h=int(self._hw[i, 0]),
            img_w=int(self._hw[i, 1]),
            boxes=np.ascontiguousarray(recs["box"]),
            features=feats,
            obj_ids=np.ascontiguousarray(recs["obj_id"]),
            obj_conf=np.ascontiguousarray(recs["obj_conf"]),
            attr_ids=np.ascontiguousarray(recs["attr_id"]),
            attr_conf=np.ascontiguousarray(recs["attr_conf"]),
            class_probs=class_probs,
            class_ids=class_ids,
        )

    def read_features(self, img_id: str, out: np.ndarray | None = None) -> np.ndarray:
        """(n, F) features of one image only (no box records). With ``out`` (a C-contiguous array of the store's
        dtype with >= n rows of F), the rows are read straight into ``out[:n]`` (no intermediate copy), which is
        what a collator filling a padded (B, N, F) batch wants."""
        i = self._open_row(img_id)
        start, n = int(self._start[i]), int(self._n[i])
        if out is None:
            out = np.empty((n, self.feat_dim), self.feat_dtype)
        elif (
            out.dtype != np.dtype(self.feat_dtype)
            or out.ndim != 2
            or out.shape[0] < n
            or out.shape[1] != self.feat_dim
            or not out.flags.c_contiguous
        ):
            raise ValueError(
                f"out must be C-contiguous {self.feat_dtype} with >= {n} rows of {self.feat_dim}, "
                f"got {out.dtype} {out.shape}"
            )
        dst = out[:n]
        if self._fds is not None:
            want = dst.nbytes
            got = (
                os.preadv(self._fds[0], [dst.reshape(-1).view(np.uint8)], start * self.feat_dim * dst.itemsize)
                if want
                else 0
            )
            if got != want:
                raise OSError(f"{self.path}: short read ({got} of {want} bytes); the store is truncated")
        else:
            dst[...] = self._mmaps[0][start : start + n]  # type: ignore[index]
        return dst

    def get(self, img_id: str, default: RegionFeatures | None = None) -> RegionFeatures | None:
        return self[img_id] if img_id in self else default

    def close(self) -> None:
        if self._fds is not None and self._pid == os.getpid():
            for fd in self._fds:
                os.close(fd)
        self._fds, self._mmaps, self._pid = None, None, None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_fds=None, _mmaps=None, _pid=None)
        return state

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        return (
            f"FeatureStore({str(self.path)!r}, images={len(self)}, feat_dim={self.feat_dim}, dtype={self.feat_dtype}"
            + (f", class_dist={self.class_dist})" if self.class_dist else ")")
        )


class FeatureStoreWriter:
    """Append-only writer; re-opening an existing store resumes it (``done_ids`` lists what is complete).

    Only one writer per store at a time (an exclusive ``flock``). Each ``add`` is durable against a process
    kill once it returns; with ``fsync=True`` also against power loss (slower).

    ``class_dist``: keep each box's class distribution (a new store), or check it against the existing store's
    (None: take the existing store's, if any).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        feat_dim: int = 2048,
        feat_dtype: str = "float16",
        metadata: dict[str, Any] | None = None,
        fsync: bool = False,
        class_dist: ClassDist | None = None,
    ):
        if feat_dtype not in FEAT_DTYPES:
            raise ValueError(f"feat_dtype must be one of {FEAT_DTYPES}, got {feat_dtype!r}")
        if int(feat_dim) <= 0:
            raise ValueError(f"feat_dim must be positive, got {feat_dim}")
        self.path = Path(path)
        self.fsync = fsync
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise RuntimeError(f"{self.path}: another process is writing this feature store") from None

        if (self.path / META_FILE).exists():
            self._meta = _read_meta(self.path)
            if self._meta["feat_dim"] != int(feat_dim) or self._meta["feat_dtype"] != feat_dtype:
                self._release()
                raise ValueError(
                    f"{self.path}: existing store has feat_dim={self._meta['feat_dim']}, "
                    f"feat_dtype={self._meta['feat_dtype']}; asked to resume with feat_dim={feat_dim}, "
                    f"feat_dtype={feat_dtype}"
                )
            existing = _class_dist(self._meta, self.path)
            if class_dist is not None and class_dist != existing:
                self._release()
                has = f"has class_dist={existing}" if existing else "has no class distributions"
                raise ValueError(f"{self.path}: existing store {has}; asked to resume with class_dist={class_dist}")
            class_dist = existing
            if metadata:
                self._meta.setdefault("metadata", {}).update(metadata)
                atomic_write_json(self.path / META_FILE, self._meta)
        else:
            self._meta = {
                "format": FORMAT_NAME,
                "version": CLASS_DIST_VERSION if class_dist else FORMAT_VERSION,
                "feat_dim": int(feat_dim),
                "feat_dtype": feat_dtype,
                "metadata": dict(metadata or {}),
            }
            if class_dist:
                self._meta["class_dist"] = class_dist.to_json()
            atomic_write_json(self.path / META_FILE, self._meta)
        self.class_dist: ClassDist | None = class_dist

        self.feat_dim = int(feat_dim)
        self.feat_dtype = feat_dtype
        self._feat_row_bytes = self.feat_dim * np.dtype(feat_dtype).itemsize
        entries, index_bytes = _parse_index(self.path)
        self._done: set[str] = {e["id"] for e in entries}
        self._rows = int(sum(e["n"] for e in entries))
        # Drop whatever a killed writer left after the last complete image.
        sizes = [
            (INDEX_FILE, index_bytes),
            (FEATURES_FILE, self._rows * self._feat_row_bytes),
            (BOXES_FILE, self._rows * BOX_RECORD.itemsize),
        ]
        if class_dist:
            sizes.append((CLASSES_FILE, self._rows * class_dist.record.itemsize))
        for name, size in sizes:
            f = self.path / name
            if not f.exists():
                f.touch()
            actual = f.stat().st_size
            if actual < size:
                self._release()
                raise ValueError(f"{f}: {actual} bytes but the index needs {size}; the store is damaged")
            if actual > size:
                os.truncate(f, size)
        self._feat_f = open(self.path / FEATURES_FILE, "ab")
        self._box_f = open(self.path / BOXES_FILE, "ab")
        self._class_f = open(self.path / CLASSES_FILE, "ab") if class_dist else None
        self._index_f = open(self.path / INDEX_FILE, "ab")
        self._closed = False

    @property
    def done_ids(self) -> set[str]:
        return set(self._done)

    def __len__(self) -> int:
        return len(self._done)

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._meta.get("metadata", {}))

    def set_metadata(self, **values: Any) -> None:
        """Merge keys into the store's metadata (e.g. object_classes=[...], attribute_classes=[...])."""
        self._meta.setdefault("metadata", {}).update(values)
        atomic_write_json(self.path / META_FILE, self._meta)

    def add(
        self,
        img_id: str,
        img_h: int,
        img_w: int,
        boxes: Any,
        features: Any,
        obj_ids: Any,
        obj_conf: Any,
        attr_ids: Any,
        attr_conf: Any,
        class_probs: Any = None,
        class_ids: Any = None,
    ) -> None:
        """Append one image; arrays may be numpy or torch. Raises on a duplicate id or inconsistent shapes.
        ``class_probs`` (n, k) / ``class_ids`` (n, k): as the store's ``class_dist`` asks (ids: top-k stores only)."""
        if self._closed:
            raise RuntimeError(f"{self.path}: writer is closed")
        img_id = str(img_id)
        if img_id in self._done:
            raise ValueError(f"{self.path}: image id {img_id!r} is already in the store")
        boxes = _as_np(boxes, np.float32, "boxes")
        n = boxes.shape[0] if boxes.ndim == 2 else -1
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"image {img_id!r}: field 'boxes' has shape {boxes.shape}, expected (n, 4)")
        feats = _as_np(features, np.float32, "features")
        if feats.shape != (n, self.feat_dim):
            raise ValueError(
                f"image {img_id!r}: field 'features' has shape {feats.shape}, expected ({n}, {self.feat_dim})"
            )
        rec = np.empty((n,), BOX_RECORD)
        rec["box"] = boxes
        for field, value, dtype in (
            ("obj_id", obj_ids, np.int64),
            ("obj_conf", obj_conf, np.float32),
            ("attr_id", attr_ids, np.int64),
            ("attr_conf", attr_conf, np.float32),
        ):
            arr = _as_np(value, dtype, field)
            if arr.shape != (n,):
                raise ValueError(f"image {img_id!r}: field '{field}' has shape {arr.shape}, expected ({n},)")
            rec[field] = arr
        classes = self._class_records(img_id, n, class_probs, class_ids)
        with np.errstate(over="ignore"):  # overflow is reported below, with the image id
            feats = feats.astype(self.feat_dtype, copy=False)
        if self.feat_dtype == "float16" and n and not np.isfinite(feats).all():
            raise ValueError(f"image {img_id!r}: features overflow float16 (|x| > 65504); use feat_dtype=float32")
        self._feat_f.write(np.ascontiguousarray(feats).tobytes())
        self._box_f.write(rec.tobytes())
        if classes is not None:
            self._class_f.write(classes.tobytes())  # type: ignore[union-attr]
        for f in self._data_files():
            f.flush()
            if self.fsync:
                os.fsync(f.fileno())
        # The image counts as written only once this line is in the file.
        line = json.dumps({"id": img_id, "h": int(img_h), "w": int(img_w), "start": self._rows, "n": n})
        self._index_f.write(line.encode() + b"\n")
        self._index_f.flush()
        if self.fsync:
            os.fsync(self._index_f.fileno())
        self._rows += n
        self._done.add(img_id)

    def _data_files(self) -> list:
        return [f for f in (self._feat_f, self._box_f, self._class_f) if f is not None]

    def _class_records(self, img_id: str, n: int, probs: Any, ids: Any) -> np.ndarray | None:
        """(n,) class records of one image, checked against ``class_dist``; None when the store keeps none."""
        dist = self.class_dist
        if dist is None:
            if probs is not None or ids is not None:
                raise ValueError(
                    f"image {img_id!r}: field 'class_probs' is given but the store {self.path} has no class "
                    "distributions (open its writer with class_dist=...)"
                )
            return None
        if probs is None:
            raise ValueError(
                f"image {img_id!r}: field 'class_probs' is missing, expected ({n}, {dist.k}) float32 (the store keeps "
                f"class distributions: {dist})"
            )
        rec = np.empty((n,), dist.record)
        probs = _as_np(probs, np.float32, "class_probs")
        if probs.shape != (n, dist.k) and not (n == 0 and probs.size == 0):
            raise ValueError(f"image {img_id!r}: field 'class_probs' has shape {probs.shape}, expected ({n}, {dist.k})")
        if n and not np.isfinite(probs).all():
            raise ValueError(f"image {img_id!r}: field 'class_probs' has non-finite values (NaN or inf)")
        if n and (probs.min() < 0 or probs.max() > 1):
            raise ValueError(f"image {img_id!r}: field 'class_probs' has values outside [0, 1] (probabilities)")
        rec["probs"] = probs.reshape(n, dist.k)
        if dist.full:
            if ids is not None:
                raise ValueError(
                    f"image {img_id!r}: field 'class_ids' is given, expected none (the store keeps the full "
                    f"distribution, {dist}: its columns are the classes)"
                )
            return rec
        if ids is None:
            raise ValueError(f"image {img_id!r}: field 'class_ids' is missing, expected ({n}, {dist.k}) class ids")
        ids = _as_np(ids, np.int64, "class_ids")
        if ids.shape != (n, dist.k) and not (n == 0 and ids.size == 0):
            raise ValueError(f"image {img_id!r}: field 'class_ids' has shape {ids.shape}, expected ({n}, {dist.k})")
        if n and (ids.min() < 0 or ids.max() >= 2**31):
            bad = int(ids.min()) if ids.min() < 0 else int(ids.max())
            raise ValueError(f"image {img_id!r}: field 'class_ids' has {bad}, expected class indices >= 0 (int32)")
        rec["ids"] = ids.reshape(n, dist.k)
        return rec

    def add_region(self, r: RegionFeatures) -> None:
        self.add(
            r.img_id,
            r.img_h,
            r.img_w,
            r.boxes,
            r.features,
            r.obj_ids,
            r.obj_conf,
            r.attr_ids,
            r.attr_conf,
            r.class_probs,
            r.class_ids,
        )

    def _release(self) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        os.close(self._lock_fd)

    def close(self) -> None:
        if getattr(self, "_closed", True):
            return
        for f in (*self._data_files(), self._index_f):
            f.close()
        self._release()
        self._closed = True

    def __enter__(self) -> FeatureStoreWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def _as_np(value: Any, dtype: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise ValueError(f"field '{name}': cannot convert to {np.dtype(dtype).name} ({e})") from e


def merge_stores(sources: Iterable[str | os.PathLike], dest: str | os.PathLike) -> int:
    """Append every image of ``sources`` (in order) that ``dest`` lacks; returns how many were added.

    Resumable like any write. Metadata (and the class distribution kept) of the first source go to ``dest``.
    """
    sources = [FeatureStore(s) for s in sources]
    if not sources:
        raise ValueError("merge_stores: no source stores given")
    first = sources[0]
    added = 0
    with FeatureStoreWriter(
        dest, first.feat_dim, first.feat_dtype, metadata=first.metadata, class_dist=first.class_dist
    ) as w:
        for src in sources:
            if (src.feat_dim, src.feat_dtype, src.class_dist) != (first.feat_dim, first.feat_dtype, first.class_dist):
                raise ValueError(
                    f"{src.path}: feat_dim/dtype/class_dist {src.feat_dim}/{src.feat_dtype}/{src.class_dist} differ "
                    f"from {first.path}: {first.feat_dim}/{first.feat_dtype}/{first.class_dist}"
                )
            done = w.done_ids
            for img_id in src.image_ids:
                if img_id not in done:
                    w.add_region(src[img_id])
                    added += 1
            src.close()
    return added
