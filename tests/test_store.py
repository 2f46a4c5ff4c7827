"""Feature store: read-back equality, fp16, variable box counts, resume, crash recovery, workers."""

from __future__ import annotations

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
    FEATURES_FILE,
    INDEX_FILE,
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
