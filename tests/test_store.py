"""Feature store: read-back equality, fp16, variable box counts, resume, crash recovery, workers."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from lxmert_repro.features.store import (
    BOXES_FILE,
    CLASSES_FILE,
    FEATURES_FILE,
    INDEX_FILE,
    ClassDist,
    FeatureStore,
    FeatureStoreWriter,
    RegionFeatures,
    merge_stores,
)

F = 16


def make_region(i: int, n: int, feat_dim: int = F) -> RegionFeatures:
    rng = np.random.default_rng(i)
    xy = rng.uniform(0, 50, (n, 2)).astype(np.float32)
    wh = rng.uniform(1, 30, (n, 2)).astype(np.float32)
    return RegionFeatures(
        img_id=f"img_{i}",
        img_h=100 + i,
        img_w=200 + i,
        boxes=np.concatenate([xy, xy + wh], 1),
        features=rng.normal(size=(n, feat_dim)).astype(np.float32),
        obj_ids=rng.integers(0, 1600, n).astype(np.int64),
        obj_conf=rng.uniform(size=n).astype(np.float32),
        attr_ids=rng.integers(0, 400, n).astype(np.int64),
        attr_conf=rng.uniform(size=n).astype(np.float32),
    )


def assert_same(a: RegionFeatures, b: RegionFeatures, feat_dtype: str = "float32") -> None:
    assert (a.img_id, a.img_h, a.img_w, a.num_boxes) == (b.img_id, b.img_h, b.img_w, b.num_boxes)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.obj_ids, b.obj_ids)
    np.testing.assert_array_equal(a.attr_ids, b.attr_ids)
    np.testing.assert_array_equal(a.obj_conf, b.obj_conf)
    np.testing.assert_array_equal(a.attr_conf, b.attr_conf)
    np.testing.assert_array_equal(a.features.astype(feat_dtype), b.features)


COUNTS = [3, 0, 36, 1, 10, 7]


@pytest.mark.parametrize("feat_dtype", ["float32", "float16"])
@pytest.mark.parametrize("access", ["pread", "mmap"])
def test_read_back_equals_written(tmp_path, feat_dtype, access):
    regions = [make_region(i, n) for i, n in enumerate(COUNTS)]
    meta = {"object_classes": ["a", "b"], "attribute_classes": ["red"]}
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F, feat_dtype=feat_dtype, metadata=meta) as w:
        for r in regions:
            w.add_region(r)
        assert len(w) == len(regions)
    store = FeatureStore(tmp_path / "s", access=access)
    assert len(store) == len(regions)
    assert store.image_ids == [r.img_id for r in regions]
    assert store.feat_dim == F and store.feat_dtype == feat_dtype
    assert store.metadata == meta
    assert "img_3" in store and "nope" not in store
    assert store.num_boxes.tolist() == COUNTS and store.total_boxes == sum(COUNTS)
    for r in reversed(regions):  # random order
        got = store[r.img_id]
        assert got.features.dtype == np.dtype(feat_dtype)
        assert_same(r, got, feat_dtype)
    with pytest.raises(KeyError, match="nope"):
        store["nope"]
    fm = store.features_memmap()
    assert fm.shape == (sum(COUNTS), F)


def test_torch_inputs_and_validation(tmp_path):
    r = make_region(0, 4)
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F, feat_dtype="float32") as w:
        w.add(
            "t",
            5,
            6,
            torch.from_numpy(r.boxes),
            torch.from_numpy(r.features),
            torch.from_numpy(r.obj_ids),
            torch.from_numpy(r.obj_conf),
            torch.from_numpy(r.attr_ids),
            torch.from_numpy(r.attr_conf),
        )
        with pytest.raises(ValueError, match="already in the store"):
            w.add_region(RegionFeatures(**{**r.__dict__, "img_id": "t"}))
        with pytest.raises(ValueError, match="'features' has shape"):
            w.add("x", 1, 1, r.boxes, r.features[:, :3], r.obj_ids, r.obj_conf, r.attr_ids, r.attr_conf)
        with pytest.raises(ValueError, match="'attr_conf' has shape"):
            w.add("x", 1, 1, r.boxes, r.features, r.obj_ids, r.obj_conf, r.attr_ids, r.attr_conf[:2])
    np.testing.assert_array_equal(FeatureStore(tmp_path / "s")["t"].features, r.features)
    with pytest.raises(ValueError, match="feat_dim=16, feat_dtype=float32; asked to resume with feat_dim=8"):
        FeatureStoreWriter(tmp_path / "s", feat_dim=8, feat_dtype="float32")
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        FeatureStore(tmp_path / "missing")


def test_fp16_overflow_is_an_error(tmp_path):
    r = make_region(0, 2)
    r.features[0, 0] = 1e6
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F, feat_dtype="float16") as w:
        with pytest.raises(ValueError, match="overflow float16"):
            w.add_region(r)


def test_resume_and_torn_tail_is_dropped(tmp_path):
    path = tmp_path / "s"
    regions = [make_region(i, n) for i, n in enumerate(COUNTS)]
    with FeatureStoreWriter(path, feat_dim=F, feat_dtype="float32") as w:
        for r in regions[:3]:
            w.add_region(r)
    # Simulate a writer killed in the middle of image 3: data bytes partly written, index line torn.
    with open(path / FEATURES_FILE, "ab") as f:
        f.write(b"\x01" * 100)
    with open(path / BOXES_FILE, "ab") as f:
        f.write(b"\x02" * 45)
    with open(path / INDEX_FILE, "ab") as f:
        f.write(b'{"id": "img_3", "h": 1')
    # Readers ignore the torn tail.
    assert FeatureStore(path).image_ids == ["img_0", "img_1", "img_2"]
    with FeatureStoreWriter(path, feat_dim=F, feat_dtype="float32") as w:
        assert w.done_ids == {"img_0", "img_1", "img_2"}
        for r in regions:
            if r.img_id not in w.done_ids:
                w.add_region(r)
    store = FeatureStore(path)
    assert store.image_ids == [r.img_id for r in regions]
    for r in regions:
        assert_same(r, store[r.img_id])


def test_killed_writer_process_loses_at_most_the_image_in_flight(tmp_path):
    """A real SIGKILL between/within adds: earlier images intact, resumed store complete."""
    path = tmp_path / "s"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_store import make_region
        from lxmert_repro.features.store import FeatureStoreWriter
        w = FeatureStoreWriter({str(path)!r}, feat_dim={F}, feat_dtype="float16")
        for i in range(50):
            w.add_region(make_region(i, 5 + i % 7))
            if i == 20:
                # start writing image 21's bytes, then die without its index line
                w._feat_f.write(b"x" * 77); w._feat_f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    store = FeatureStore(path)
    assert len(store) == 21
    with FeatureStoreWriter(path, feat_dim=F, feat_dtype="float16") as w:
        for i in range(50):
            if f"img_{i}" not in w.done_ids:
                w.add_region(make_region(i, 5 + i % 7))
    store = FeatureStore(path)
    assert store.image_ids == [f"img_{i}" for i in range(50)]
    for i in range(50):
        assert_same(make_region(i, 5 + i % 7), store[f"img_{i}"], "float16")


def test_single_writer_lock(tmp_path):
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F):
        with pytest.raises(RuntimeError, match="another process"):
            FeatureStoreWriter(tmp_path / "s", feat_dim=F)


def _read_in_child(store: FeatureStore, img_id: str, q) -> None:
    q.put(store[img_id].features.sum().item())


def test_pickles_and_reopens_per_process(tmp_path):
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F, feat_dtype="float32") as w:
        for i in range(4):
            w.add_region(make_region(i, 3))
    store = FeatureStore(tmp_path / "s")
    expected = store["img_2"].features.sum().item()  # opens descriptors in this process
    clone = pickle.loads(pickle.dumps(store))
    assert clone._fds is None
    assert clone["img_2"].features.sum().item() == expected
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_read_in_child, args=(store, "img_2", q))
    p.start()
    p.join(30)
    assert q.get(timeout=5) == expected
    # the parent's descriptors still work after the child closed its own
    assert store["img_2"].features.sum().item() == expected


def test_merge_stores(tmp_path):
    regions = [make_region(i, n) for i, n in enumerate(COUNTS)]
    for k in range(2):
        with FeatureStoreWriter(tmp_path / f"shard{k}", feat_dim=F, metadata={"object_classes": ["x"]}) as w:
            for r in regions[k::2]:
                w.add_region(r)
    # a partial destination (as after a kill during a merge) is completed without duplicates
    with FeatureStoreWriter(tmp_path / "dest", feat_dim=F) as w:
        w.add_region(regions[0])
    added = merge_stores([tmp_path / "shard0", tmp_path / "shard1"], tmp_path / "dest")
    assert added == len(regions) - 1
    store = FeatureStore(tmp_path / "dest")
    assert sorted(store.image_ids) == sorted(r.img_id for r in regions)
    assert store.metadata["object_classes"] == ["x"]
    for r in regions:
        assert_same(r, store[r.img_id], "float16")


@pytest.mark.parametrize("access", ["pread", "mmap"])
def test_read_features_into_a_batch_buffer(tmp_path, access):
    regions = [make_region(i, n) for i, n in enumerate([3, 5])]
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F, feat_dtype="float16") as w:
        for r in regions:
            w.add_region(r)
    store = FeatureStore(tmp_path / "s", access=access)
    batch = np.zeros((2, 6, F), np.float16)  # (B, N_max, F), padded
    for b, r in enumerate(regions):
        got = store.read_features(r.img_id, out=batch[b])
        assert got.shape == (r.num_boxes, F)
    np.testing.assert_array_equal(batch[0, :3], regions[0].features.astype(np.float16))
    assert not batch[0, 3:].any()
    np.testing.assert_array_equal(batch[1, :5], regions[1].features.astype(np.float16))
    with pytest.raises(ValueError, match="out must be C-contiguous float16"):
        store.read_features("img_1", out=np.zeros((2, F), np.float16))


def with_class_dist(r: RegionFeatures, k: int, full: bool, num_classes: int = 1601) -> RegionFeatures:
    """``r`` with a class distribution per box: ``k`` classes (all ``k`` columns when ``full``, else the top ``k``
    of ``num_classes``, most probable first)."""
    rng = np.random.default_rng(1000 + r.num_boxes)
    n = r.num_boxes
    if full:
        r.class_probs = rng.dirichlet(np.ones(k), n).astype(np.float32)
        return r
    probs = -np.sort(-rng.dirichlet(np.ones(num_classes), n), axis=1)[:, :k]
    r.class_probs = probs.astype(np.float32)
    r.class_ids = np.array([rng.permutation(num_classes)[:k] for _ in range(n)], np.int64).reshape(n, k)
    return r


@pytest.mark.parametrize("access", ["pread", "mmap"])
@pytest.mark.parametrize("dist", [ClassDist(3, full=False), ClassDist(5, full=True)])
def test_class_distribution_round_trip_resume_and_merge(tmp_path, access, dist):
    regions = [with_class_dist(make_region(i, n), dist.k, dist.full) for i, n in enumerate(COUNTS)]
    path = tmp_path / "s"
    with FeatureStoreWriter(path, feat_dim=F, feat_dtype="float32", class_dist=dist) as w:
        for r in regions[:4]:
            w.add_region(r)
    with open(path / CLASSES_FILE, "ab") as f:  # a writer killed inside image 4: torn bytes, no index line
        f.write(b"\x03" * 13)
    with FeatureStoreWriter(path, feat_dim=F, feat_dtype="float32") as w:  # resuming adopts the store's k
        assert w.class_dist == dist
        for r in regions[4:]:
            w.add_region(r)
    store = FeatureStore(path, access=access)
    assert store.class_dist == dist
    rows = sum(COUNTS)
    assert (path / CLASSES_FILE).stat().st_size == rows * (4 if dist.full else 8) * dist.k
    for r in reversed(regions):
        got = store[r.img_id]
        assert_same(r, got)
        assert got.class_probs.dtype == np.float32 and got.class_probs.shape == (r.num_boxes, dist.k)
        np.testing.assert_array_equal(got.class_probs, r.class_probs)
        if dist.full:
            assert got.class_ids is None  # the columns are the classes
        else:
            assert got.class_ids.dtype == np.int64
            np.testing.assert_array_equal(got.class_ids, r.class_ids)
    merge_stores([path], tmp_path / "m")
    merged = FeatureStore(tmp_path / "m")
    assert merged.class_dist == dist
    np.testing.assert_array_equal(merged["img_2"].class_probs, regions[2].class_probs)
    with pytest.raises(ValueError, match=rf"class_dist=.*k={dist.k}.*asked to resume with .*k={dist.k + 1}"):
        FeatureStoreWriter(path, feat_dim=F, feat_dtype="float32", class_dist=ClassDist(dist.k + 1, dist.full))


def test_class_distribution_is_checked_when_written(tmp_path):
    r = with_class_dist(make_region(0, 4), 3, full=False)
    with FeatureStoreWriter(tmp_path / "s", feat_dim=F, class_dist=ClassDist(3, full=False)) as w:
        with pytest.raises(ValueError, match=r"image 'img_0': field 'class_probs' is missing, expected \(4, 3\)"):
            w.add_region(RegionFeatures(**{**r.__dict__, "class_probs": None}))
        with pytest.raises(ValueError, match=r"field 'class_ids' has shape \(4, 2\), expected \(4, 3\)"):
            w.add_region(RegionFeatures(**{**r.__dict__, "class_ids": r.class_ids[:, :2]}))
        with pytest.raises(ValueError, match=r"field 'class_probs' has values outside \[0, 1\]"):
            w.add_region(RegionFeatures(**{**r.__dict__, "class_probs": r.class_probs + 1}))
        with pytest.raises(ValueError, match=r"field 'class_ids' has -1, expected class indices >= 0"):
            w.add_region(RegionFeatures(**{**r.__dict__, "class_ids": -np.ones_like(r.class_ids)}))
    with FeatureStoreWriter(tmp_path / "full", feat_dim=F, class_dist=ClassDist(3, full=True)) as w:
        with pytest.raises(ValueError, match=r"field 'class_ids' is given, expected none .*full distribution"):
            w.add_region(r)
    with FeatureStoreWriter(tmp_path / "plain", feat_dim=F) as w:
        with pytest.raises(ValueError, match=r"field 'class_probs' is given but the store .* has no class dist"):
            w.add_region(r)
        w.add_region(make_region(1, 2))
    with pytest.raises(ValueError, match=r"plain: existing store has no class distributions; asked to resume with"):
        FeatureStoreWriter(tmp_path / "plain", feat_dim=F, class_dist=ClassDist(3, full=False))
    with pytest.raises(ValueError, match="k must be a positive integer"):
        ClassDist(0, full=False)


def test_a_store_written_before_class_distributions_opens(tmp_path):
    """The version-1 layout, written byte by byte here: no class file, no ``class_dist`` key."""
    path = tmp_path / "old"
    path.mkdir()
    r = make_region(0, 3)
    meta = {"format": "lxmert-repro-features", "version": 1, "feat_dim": F, "feat_dtype": "float32", "metadata": {}}
    (path / "store.json").write_text(json.dumps(meta))
    (path / FEATURES_FILE).write_bytes(r.features.astype("<f4").tobytes())
    rec = b"".join(
        np.asarray(b, "<f4").tobytes()
        + np.int64(o).tobytes()
        + np.float32(oc).tobytes()
        + np.int64(a).tobytes()
        + np.float32(ac).tobytes()
        for b, o, oc, a, ac in zip(r.boxes, r.obj_ids, r.obj_conf, r.attr_ids, r.attr_conf)
    )
    (path / BOXES_FILE).write_bytes(rec)
    (path / INDEX_FILE).write_text(json.dumps({"id": "img_0", "h": r.img_h, "w": r.img_w, "start": 0, "n": 3}) + "\n")
    store = FeatureStore(path)
    assert store.class_dist is None
    got = store["img_0"]
    assert_same(r, got)
    assert got.class_probs is None and got.class_ids is None
    with FeatureStoreWriter(path, feat_dim=F, feat_dtype="float32") as w:  # resumed as it is
        w.add_region(make_region(1, 2))
    assert json.loads((path / "store.json").read_text())["version"] == 1
    assert not (path / CLASSES_FILE).exists()
    assert FeatureStore(path)["img_1"].class_probs is None
