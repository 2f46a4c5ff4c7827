"""LXMERT TSV import/export: a TSV written here, field by field, in the original format."""
from __future__ import annotations

import base64
import tracemalloc

import numpy as np
import pytest

from lxmert_repro.features.store import FeatureStore
from lxmert_repro.features.tsv import export_tsv, import_tsv, iter_tsv


def b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def write_lxmert_tsv(path, n_images: int, feat_dim: int, seed: int = 0) -> list[dict]:
    """Exactly the layout of LXMERT's feature TSVs: 10 tab-separated fields, no header."""
    rng = np.random.default_rng(seed)
    rows = []
    with open(path, "w") as f:
        for i in range(n_images):
            n = 36 if i % 3 else int(rng.integers(10, 101))
            row = {
                "img_id": f"COCO_val2014_{i:012d}",
                "img_h": int(rng.integers(200, 640)),
                "img_w": int(rng.integers(200, 640)),
                "objects_id": rng.integers(0, 1600, n).astype(np.int64),
                "objects_conf": rng.uniform(0.2, 1, n).astype(np.float32),
                "attrs_id": rng.integers(0, 400, n).astype(np.int64),
                "attrs_conf": rng.uniform(0, 1, n).astype(np.float32),
                "num_boxes": n,
                "boxes": rng.uniform(0, 200, (n, 4)).astype(np.float32),
                "features": rng.exponential(size=(n, feat_dim)).astype(np.float32),
            }
            f.write("\t".join([
                row["img_id"], str(row["img_h"]), str(row["img_w"]),
                b64(row["objects_id"]), b64(row["objects_conf"]), b64(row["attrs_id"]), b64(row["attrs_conf"]),
                str(n), b64(row["boxes"]), b64(row["features"]),
            ]) + "\n")
            rows.append(row)
    return rows


def check_store(store: FeatureStore, rows: list[dict], exact: bool) -> None:
    assert store.image_ids == [r["img_id"] for r in rows]
    for r in rows:
        got = store[r["img_id"]]
        assert (got.img_h, got.img_w, got.num_boxes) == (r["img_h"], r["img_w"], r["num_boxes"])
        np.testing.assert_array_equal(got.obj_ids, r["objects_id"])
        np.testing.assert_array_equal(got.attr_ids, r["attrs_id"])
        np.testing.assert_array_equal(got.obj_conf, r["objects_conf"])
        np.testing.assert_array_equal(got.attr_conf, r["attrs_conf"])
        np.testing.assert_array_equal(got.boxes, r["boxes"])
        if exact:
            np.testing.assert_array_equal(got.features, r["features"])
        else:
            np.testing.assert_allclose(got.features.astype(np.float32), r["features"], rtol=1e-3, atol=1e-4)


def test_tsv_round_trip_float32_is_byte_identical(tmp_path):
    tsv = tmp_path / "feats.tsv"
    rows = write_lxmert_tsv(tsv, 7, feat_dim=64)
    assert import_tsv([tsv], tmp_path / "store", feat_dtype="float32") == 7
    store = FeatureStore(tmp_path / "store")
    assert store.feat_dim == 64
    check_store(store, rows, exact=True)
    assert export_tsv(tmp_path / "store", tmp_path / "out.tsv") == 7
    assert (tmp_path / "out.tsv").read_bytes() == tsv.read_bytes()


def test_tsv_import_fp16_resumes_and_streams(tmp_path):
    tsv = tmp_path / "feats.tsv"
    rows = write_lxmert_tsv(tsv, 60, feat_dim=2048, seed=1)  # ~24 MB of TSV
    assert import_tsv([tsv], tmp_path / "store", limit=20) == 20  # a partial import, as if killed
    tracemalloc.start()
    assert import_tsv([tsv], tmp_path / "store") == 40  # resumes: adds only what is missing
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 8 * 2**20, f"import held {peak / 2**20:.1f} MiB: not streaming"
    store = FeatureStore(tmp_path / "store")
    assert store.feat_dtype == "float16"
    check_store(store, rows, exact=False)


def test_tsv_errors_name_file_line_and_field(tmp_path):
    tsv = tmp_path / "bad.tsv"
    write_lxmert_tsv(tsv, 2, feat_dim=8)
    lines = tsv.read_text().splitlines()
    parts = lines[1].split("\t")
    parts[7] = str(int(parts[7]) + 1)  # num_boxes disagrees with the arrays
    tsv.write_text(lines[0] + "\n" + "\t".join(parts) + "\n")
    with pytest.raises(ValueError, match=r"bad.tsv:2: field 'objects_id' has \d+ bytes"):
        list(iter_tsv(tsv))
    tsv.write_text("a\tb\n")
    with pytest.raises(ValueError, match="bad.tsv:1: 2 tab-separated fields, expected 10"):
        list(iter_tsv(tsv))
