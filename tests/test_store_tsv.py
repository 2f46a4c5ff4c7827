"""LXMERT TSV import/export: a TSV written here, field by field, in the original format."""

from __future__ import annotations

import base64
import tracemalloc

import numpy as np
import pytest

from lxmert_repro.cli.features import main as features_main
from lxmert_repro.cli.features import summarize
from lxmert_repro.features.store import ClassDist, FeatureStore, FeatureStoreWriter
from lxmert_repro.features.tsv import export_tsv, import_tsv, iter_tsv


def b64(a: np.ndarray) -> str:
    return base64.b64encode(a.tobytes()).decode("ascii")


def boxes_xyxy(rng, n: int) -> np.ndarray:
    """(n, 4) pixel x1 <= x2, y1 <= y2 inside a 200 x 200 corner (every image is at least 200 px)."""
    xy = rng.uniform(0, 100, (n, 2))
    return np.concatenate([xy, xy + rng.uniform(0, 100, (n, 2))], axis=1).astype(np.float32)


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
                "boxes": boxes_xyxy(rng, n),
                "features": rng.exponential(size=(n, feat_dim)).astype(np.float32),
            }
            f.write(
                "\t".join(
                    [
                        row["img_id"],
                        str(row["img_h"]),
                        str(row["img_w"]),
                        b64(row["objects_id"]),
                        b64(row["objects_conf"]),
                        b64(row["attrs_id"]),
                        b64(row["attrs_conf"]),
                        str(n),
                        b64(row["boxes"]),
                        b64(row["features"]),
                    ]
                )
                + "\n"
            )
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


def set_field(line: str, field: int, value: str) -> str:
    parts = line.rstrip("\n").split("\t")
    parts[field] = value
    return "\t".join(parts) + "\n"


def test_truncated_first_line_is_refused_not_imported_with_a_smaller_dim(tmp_path):
    tsv = tmp_path / "feats.tsv"
    rows = write_lxmert_tsv(tsv, 1, feat_dim=256)
    n = rows[0]["num_boxes"]
    text = tsv.read_text()
    # cut inside the features field at a point where the rest still decodes: as to 120 values per box
    cut = text[: text.rindex("\t") + 1] + b64(rows[0]["features"].reshape(-1)[: n * 120])
    tsv.write_text(cut)  # the file ends there, without a line end, as a copy cut short does
    with pytest.raises(
        ValueError,
        match=r"feats.tsv:1: the only record with boxes ends without a line end \(the "
        r"file looks truncated\); its features would give feature dim 120",
    ):
        import_tsv([tsv], tmp_path / "store")
    assert not (tmp_path / "store").exists()
    with pytest.raises(
        ValueError,
        match=r"feats.tsv:1: field 'features' has \d+ bytes = \d+ boxes x 120 float32 "
        r"values, expected \d+ x 256 .*from feat_dim / --feat-dim\) \(the file "
        r"ends inside this line: truncated\?\)",
    ):
        import_tsv([tsv], tmp_path / "store", feat_dim=256)
    # the same shortened record followed by good ones: the good ones give the dim, the shortened one is named
    write_lxmert_tsv(tsv, 3, feat_dim=256)
    lines = tsv.read_text().splitlines(keepends=True)
    tsv.write_text(cut + "\n" + "".join(lines[1:]))
    with pytest.raises(
        ValueError,
        match=r"feats.tsv:1: field 'features' .* x 120 float32 values, expected .* x 256 "
        r".*from records .*feats.tsv:2, .*feats.tsv:3\)",
    ):
        import_tsv([tsv], tmp_path / "store")
    assert not (tmp_path / "store").exists()  # nothing written


def test_every_record_is_checked_and_named_by_file_and_line(tmp_path):
    tsv = tmp_path / "bad.tsv"
    write_lxmert_tsv(tsv, 4, feat_dim=64)
    lines = tsv.read_text().splitlines(keepends=True)
    rng = np.random.default_rng(5)

    def with_line(i: int, line: str) -> None:
        tsv.write_text("".join(lines[:i] + [line] + lines[i + 1 :]))

    n = int(lines[2].split("\t")[7])
    with_line(2, set_field(lines[2], 9, b64(rng.normal(size=(n, 32)).astype(np.float32))))  # a later-line shape error
    with pytest.raises(
        ValueError,
        match=r"bad.tsv:3: field 'features' has \d+ bytes = \d+ boxes x 32 float32 values, "
        r"expected \d+ x 64",
    ):
        import_tsv([tsv], tmp_path / "s1")
    assert len(FeatureStore(tmp_path / "s1")) == 2  # the records before it are stored; a rerun resumes
    with pytest.raises(
        ValueError,
        match=r"bad.tsv:1: field 'features' .* x 64 float32 values, expected .* x 2048 "
        r".*from feat_dim / --feat-dim",
    ):
        import_tsv([tsv], tmp_path / "s2", feat_dim=2048)
    with pytest.raises(
        ValueError,
        match=r"bad.tsv:1: field 'features' .* x 64 float32 values, expected .* x 32 "
        r".*from the existing store",
    ):
        FeatureStoreWriter(tmp_path / "s3", feat_dim=32).close()  # an (empty) store of another dim
        import_tsv([tsv], tmp_path / "s3")
    for bad, match in [
        (
            set_field(lines[2], 8, b64((np.full((n, 4), 10.0) * [1, 1, 0.5, 1]).astype(np.float32))),
            r"bad.tsv:3: field 'boxes': box 0 is \[10.0, 10.0, 5.0, 10.0\], expected x1 <= x2",
        ),
        (
            set_field(lines[2], 8, b64(np.full((n, 4), 900, np.float32))),
            r"bad.tsv:3: field 'boxes' spans x 900..900, y 900..900, outside the image of img_w=\d+ x img_h=\d+",
        ),
        (
            set_field(lines[2], 9, b64(np.full((n, 64), np.nan, np.float32))),
            r"bad.tsv:3: field 'features' has non-finite values",
        ),
        (set_field(lines[2], 1, "tall"), r"bad.tsv:3: field 'img_h' is 'tall', expected an integer"),
        (set_field(lines[2], 7, "-1"), r"bad.tsv:3: field 'num_boxes' is -1, expected an integer >= 0"),
        (
            set_field(lines[2], 4, b64(np.zeros(n + 1, np.float32))),
            rf"bad.tsv:3: field 'objects_conf' has {4 * (n + 1)} bytes, expected {4 * n} \(float32 \({n},\), from "
            rf"num_boxes={n}\)",
        ),
        (lines[0], r"bad.tsv:3: field 'img_id' 'COCO_val2014_000000000000' repeats the image of .*bad.tsv:1"),
    ]:
        with_line(2, bad)
        with pytest.raises(ValueError, match=match):
            import_tsv([tsv], tmp_path / "s4", feat_dim=64)
    # two records that disagree, and no third: which one is damaged cannot be told
    write_lxmert_tsv(tsv, 2, feat_dim=64)
    two = tsv.read_text().splitlines(keepends=True)
    m = int(two[1].split("\t")[7])
    tsv.write_text(two[0] + set_field(two[1], 9, b64(np.zeros((m, 48), np.float32))))
    with pytest.raises(
        ValueError,
        match=r"records disagree on the feature dim \(.*bad.tsv:1 has 64, .*bad.tsv:2 has "
        r"48 float32 values per box\); one is damaged, or pass feat_dim / --feat-dim",
    ):
        import_tsv([tsv], tmp_path / "s5")


def test_import_tsv_cli_checks_the_stated_feature_dim(tmp_path, capsys):
    tsv = tmp_path / "feats.tsv"
    write_lxmert_tsv(tsv, 3, feat_dim=16)
    with pytest.raises(ValueError, match=r"feats.tsv:1: field 'features' .* x 16 float32 values, expected .* x 2048"):
        features_main(["import-tsv", str(tsv), "--out", str(tmp_path / "s"), "--feat-dim", "2048"])
    features_main(["import-tsv", str(tsv), "--out", str(tmp_path / "s"), "--feat-dim", "16"])
    assert "imported 3 images" in capsys.readouterr().out
    assert FeatureStore(tmp_path / "s").feat_dim == 16


def add_class_columns(tsv, out, rows: list[dict], k: int, full: bool, seed: int = 3) -> list[dict]:
    """``tsv`` with the two class-distribution columns appended to every line (``class_ids`` empty when ``full``)."""
    rng = np.random.default_rng(seed)
    with open(out, "w") as f:
        for line, r in zip(tsv.read_text().splitlines(), rows):
            n = r["num_boxes"]
            r["class_probs"] = rng.uniform(0, 1, (n, k)).astype(np.float32)
            r["class_ids"] = None if full else rng.integers(0, 1601, (n, k)).astype(np.int64)
            f.write(f"{line}\t{'' if full else b64(r['class_ids'])}\t{b64(r['class_probs'])}\n")
    return rows


@pytest.mark.parametrize("full", [False, True])
def test_tsv_class_distribution_columns_are_imported_and_exported(tmp_path, full):
    rows = write_lxmert_tsv(tmp_path / "plain.tsv", 5, feat_dim=8)
    tsv = tmp_path / "dist.tsv"
    rows = add_class_columns(tmp_path / "plain.tsv", tsv, rows, k=4, full=full)
    assert import_tsv([tsv], tmp_path / "store", feat_dtype="float32") == 5
    store = FeatureStore(tmp_path / "store")
    assert store.class_dist == ClassDist(4, full)
    assert summarize(store)["class_dist"] == {"k": 4, "full": full}
    check_store(store, rows, exact=True)
    for r in rows:
        got = store[r["img_id"]]
        np.testing.assert_array_equal(got.class_probs, r["class_probs"])
        if full:
            assert got.class_ids is None
        else:
            np.testing.assert_array_equal(got.class_ids, r["class_ids"])
    assert export_tsv(tmp_path / "store", tmp_path / "out.tsv") == 5
    assert (tmp_path / "out.tsv").read_bytes() == tsv.read_bytes()
    # the plain file into its own store: no class distributions, 10 columns out
    import_tsv([tmp_path / "plain.tsv"], tmp_path / "plain_store")
    assert FeatureStore(tmp_path / "plain_store").class_dist is None
    assert FeatureStore(tmp_path / "plain_store")[rows[0]["img_id"]].class_probs is None


def test_tsv_class_distribution_columns_are_checked(tmp_path):
    rows = write_lxmert_tsv(tmp_path / "plain.tsv", 3, feat_dim=8)
    tsv = tmp_path / "dist.tsv"
    add_class_columns(tmp_path / "plain.tsv", tsv, rows, k=4, full=False)
    lines = tsv.read_text().splitlines(keepends=True)
    plain = (tmp_path / "plain.tsv").read_text().splitlines(keepends=True)
    n = rows[1]["num_boxes"]
    for bad, match in [
        (plain[1], r"dist.tsv:2: image '.*': field 'class_probs' is missing, expected \(\d+, 4\) float32"),
        (
            set_field(lines[1], 10, b64(np.zeros((n, 3), np.int64))),
            rf"dist.tsv:2: field 'class_ids' has {8 * n * 3} bytes, expected {8 * n * 4} \(int64 \({n}, 4\)",
        ),
        (
            set_field(lines[1], 11, b64(np.full((n, 4), np.nan, np.float32))),
            r"dist.tsv:2: field 'class_probs' has non-finite values",
        ),
        ("\t".join(lines[1].split("\t")[:11]) + "\n", r"dist.tsv:2: 11 tab-separated fields, expected 10 .* or 12"),
    ]:
        tsv.write_text("".join([lines[0], bad, lines[2]]))
        with pytest.raises(ValueError, match=match):
            import_tsv([tsv], tmp_path / "s", feat_dim=8)
    # a file without the columns into a store that keeps class distributions, and the other way round
    tsv.write_text("".join(lines))
    import_tsv([tsv], tmp_path / "with", feat_dim=8)
    write_lxmert_tsv(tmp_path / "plain4.tsv", 4, feat_dim=8)  # the same 3 images and a 4th
    with pytest.raises(ValueError, match=r"plain4.tsv:4: image '.*': field 'class_probs' is missing"):
        import_tsv([tmp_path / "plain4.tsv"], tmp_path / "with")
    import_tsv([tmp_path / "plain.tsv"], tmp_path / "without", feat_dim=8)
    with pytest.raises(ValueError, match=r"without: existing store has no class distributions; asked to resume"):
        import_tsv([tsv], tmp_path / "without")
