"""lxmert-extract: real easy-VQA images end to end into a store, corrupt images, resume after a kill."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from lxmert_repro.cli import CONFIG_DIR
from lxmert_repro.cli.extract import run
from lxmert_repro.features.detectors import build_detector, load_detector, save_detector
from lxmert_repro.features.extract import UnreadableImagesError, list_images
from lxmert_repro.features.store import ClassDist, FeatureStore

ROOT = Path(__file__).resolve().parents[1]


def easy_vqa_images() -> Path:
    import easy_vqa

    return Path(os.path.dirname(easy_vqa.__file__)) / "data" / "train" / "images"


@pytest.fixture(scope="module")
def detector_ckpt(tmp_path_factory) -> Path:
    with initialize_config_dir(str(CONFIG_DIR / "detector"), version_base=None):
        cfg = compose("easy_vqa_small")
    torch.manual_seed(0)
    out = tmp_path_factory.mktemp("det") / "ckpt"
    save_detector(build_detector(cfg), cfg, out)
    return out


def image_folder(tmp_path: Path, n: int) -> Path:
    d = tmp_path / "images"
    d.mkdir()
    for i in range(n):
        shutil.copy(easy_vqa_images() / f"{i}.png", d / f"{i}.png")
    return d


def extract_cfg(**overrides):
    with initialize_config_dir(str(CONFIG_DIR), version_base=None):
        return compose("extract", overrides=[f"{k}={v}" for k, v in overrides.items()])


def test_extract_real_images_end_to_end_with_corrupt_ones(tmp_path, detector_ckpt):
    folder = image_folder(tmp_path, 10)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    (folder / "empty.jpg").write_bytes(b"")
    cfg = extract_cfg(
        checkpoint=detector_ckpt,
        input=folder,
        output=tmp_path / "store",
        batch_size=4,
        progress=False,
        image_id_prefix="train_",
        feat_dtype="float32",
    )
    with pytest.raises(
        UnreadableImagesError,
        match=r"2 of 12 images could not be read and were skipped \(10 images "
        r"are in .*store; fix or remove these .*fail_on_skipped=false",
    ):
        run(cfg)  # fail_on_skipped=true, the default: the readable images are stored, the exit is an error
    summary = json.loads((tmp_path / "store" / "extract_summary.json").read_text())
    assert summary["written"] == 10 and summary["skipped"] == 2
    assert len(summary["errors"]) == 2 and any("broken.png" in e for e in summary["errors"])
    cfg.fail_on_skipped = False
    summary = run(cfg)  # accepted: the two unreadable ones are retried, reported, and the run exits 0
    assert summary["written"] == 0 and summary["already_done"] == 10 and summary["skipped"] == 2
    store = FeatureStore(tmp_path / "store")
    assert sorted(store.image_ids) == sorted(f"train_{i}" for i in range(10))
    assert store.metadata["object_classes"] == ["circle", "rectangle", "triangle"]
    assert store.feat_dim == 256
    detector, _ = load_detector(detector_ckpt)
    from PIL import Image

    img = torch.from_numpy(np.asarray(Image.open(folder / "3.png").convert("RGB"), dtype=np.float32)).permute(2, 0, 1)
    ref = detector.extract([img])[0]
    got = store["train_3"]
    assert (got.img_h, got.img_w) == (64, 64)
    assert 4 <= got.num_boxes <= 10
    np.testing.assert_allclose(got.features, ref.features.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got.boxes, ref.boxes.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(got.obj_ids, ref.obj_ids.numpy())
    # rerun: nothing to do, nothing duplicated
    assert run(cfg)["written"] == 0
    assert len(FeatureStore(tmp_path / "store")) == 10


def test_extract_fails_when_nothing_is_readable_and_on_an_empty_input(tmp_path, detector_ckpt):
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "a.png").write_bytes(b"not an image")
    cfg = extract_cfg(
        checkpoint=detector_ckpt,
        input=tmp_path / "bad",
        output=tmp_path / "store",
        progress=False,
        fail_on_skipped=False,
    )
    with pytest.raises(
        UnreadableImagesError,
        match=r"1 of 1 images could not be read .*not one image of the input "
        r"could be read\): .*a.png: UnidentifiedImageError",
    ):
        run(cfg)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"input=.*empty: no images \(expected image files .png"):
        run(extract_cfg(checkpoint=detector_ckpt, input=tmp_path / "empty", output=tmp_path / "s2", progress=False))


def test_extract_reads_upright_16_bit_and_tiny_images(tmp_path, detector_ckpt, caplog):
    """EXIF-rotated JPEG: stored upright with boxes in the upright frame; a 16-bit PNG gives the features of its
    8-bit version; a 1x1 image is stored with a warning about its sub-pixel boxes."""
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    grey = np.asarray(Image.open(easy_vqa_images() / "3.png").convert("L"))
    Image.fromarray(grey).save(folder / "g8.png")
    Image.fromarray(grey.astype(np.uint16) * 257).save(folder / "g16.png")
    stored = np.asarray(Image.open(easy_vqa_images() / "4.png").convert("RGB").resize((96, 64)))
    exif = Image.Exif()
    exif[0x0112] = 6  # the viewer turns the stored 96x64 picture 90 degrees clockwise: upright it is 64 wide, 96 high
    Image.fromarray(stored).save(folder / "rot.jpg", quality=95, exif=exif.tobytes())
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "dot.png")
    with caplog.at_level("WARNING"):
        summary = run(
            extract_cfg(
                checkpoint=detector_ckpt, input=folder, output=tmp_path / "store", progress=False, feat_dtype="float32"
            )
        )
    store = FeatureStore(tmp_path / "store")
    np.testing.assert_allclose(store["g16"].features, store["g8"].features, rtol=1e-5, atol=1e-5)
    rot = store["rot"]
    assert (rot.img_h, rot.img_w) == (96, 64)
    assert rot.num_boxes > 0 and rot.boxes[:, [0, 2]].max() <= 64 and rot.boxes[:, [1, 3]].max() <= 96
    detector, _ = load_detector(detector_ckpt)
    with Image.open(folder / "rot.jpg") as im:
        upright = np.rot90(np.asarray(im.convert("RGB")), k=-1)
    ref = detector.extract([torch.from_numpy(upright.astype(np.float32)).permute(2, 0, 1).contiguous()])[0]
    np.testing.assert_allclose(rot.boxes, ref.boxes.numpy(), atol=1e-3)
    np.testing.assert_allclose(rot.features, ref.features.numpy(), rtol=1e-4, atol=1e-5)
    assert (store["dot"].img_h, store["dot"].img_w) == (1, 1)
    assert summary["degenerate_boxes"] == ["dot"]
    assert any(
        "image dot (1x1 px)" in r.getMessage() and "boxes are under 1 pixel wide or high" in r.getMessage()
        for r in caplog.records
    )


def test_given_boxes_mode(tmp_path, detector_ckpt):
    folder = image_folder(tmp_path, 3)
    boxes = {"0": [[1, 2, 30, 40]], "1": [[0, 0, 64, 64], [10, 10, 20, 20]], "2": []}
    import json

    (tmp_path / "boxes.json").write_text(json.dumps(boxes))
    run(
        extract_cfg(
            checkpoint=detector_ckpt,
            input=folder,
            output=tmp_path / "store",
            progress=False,
            given_boxes=tmp_path / "boxes.json",
            feat_dtype="float32",
        )
    )
    store = FeatureStore(tmp_path / "store")
    for k, v in boxes.items():
        np.testing.assert_allclose(store[k].boxes, np.asarray(v, np.float32).reshape(-1, 4), atol=1e-3)


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, detector_ckpt):
    n = 40
    folder = image_folder(tmp_path, n)
    listing = tmp_path / "list.txt"
    listing.write_text("".join(f"img{i}\timages/{i}.png\n" for i in range(n)))
    assert list_images(listing)[5] == ("img5", str(folder / "5.png"))

    def cmd(out: Path, batch_size: int = 1):
        return [
            sys.executable,
            "-m",
            "lxmert_repro.cli.extract",
            f"checkpoint={detector_ckpt}",
            f"input={listing}",
            f"output={out}",
            f"batch_size={batch_size}",
            "progress=false",
            "feat_dtype=float32",
        ]

    subprocess.run(cmd(tmp_path / "full", batch_size=8), check=True, capture_output=True, cwd=ROOT)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cmd(killed), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    index = killed / "index.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:
        if index.exists() and index.read_text().count("\n") >= 2:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = len(FeatureStore(killed))
    assert 2 <= partial < n, f"kill landed at {partial} images; the test needs a mid-run kill"
    subprocess.run(cmd(killed, batch_size=8), check=True, capture_output=True, cwd=ROOT)
    a, b = FeatureStore(tmp_path / "full"), FeatureStore(killed)
    assert len(b.image_ids) == len(set(b.image_ids)) == n
    assert sorted(a.image_ids) == sorted(b.image_ids)
    for img_id in a.image_ids:
        x, y = a[img_id], b[img_id]
        np.testing.assert_allclose(x.features, y.features, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(x.boxes, y.boxes, atol=1e-3)
        np.testing.assert_array_equal(x.obj_ids, y.obj_ids)


def test_two_processes_shard_and_merge(tmp_path, detector_ckpt):
    folder = image_folder(tmp_path, 10)
    args = [f"checkpoint={detector_ckpt}", f"input={folder}", "batch_size=3", "progress=false", "feat_dtype=float32"]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            "-m",
            "lxmert_repro.cli.extract",
            *args,
            f"output={tmp_path / 'multi'}",
        ],
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    assert not (tmp_path / "multi.shards").exists()  # shards merged and removed
    run(extract_cfg(**dict(a.split("=", 1) for a in args), output=tmp_path / "single"))
    a, b = FeatureStore(tmp_path / "single"), FeatureStore(tmp_path / "multi")
    assert sorted(a.image_ids) == sorted(b.image_ids) and len(b.image_ids) == 10
    for i in a.image_ids:
        np.testing.assert_allclose(a[i].features, b[i].features, rtol=1e-4, atol=1e-5)


def softmax_of_the_detectors_class_scores(detector_ckpt, features: np.ndarray) -> np.ndarray:
    """(n, C+1) softmax of the detector's class scores for stored box features, background last, computed here from
    the classifier's weights (the boxes' region features are what the classifier reads)."""
    detector, _ = load_detector(detector_ckpt)
    cls = detector.roi_heads.box_predictor.cls_score
    logits = features.astype(np.float64) @ cls.weight.detach().double().numpy().T + cls.bias.detach().double().numpy()
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_extract_writes_the_class_distribution_top_k_from_config(tmp_path, detector_ckpt):
    folder = image_folder(tmp_path, 4)
    base = dict(checkpoint=detector_ckpt, input=folder, progress=False, feat_dtype="float32")
    run(extract_cfg(**base, output=tmp_path / "top2", class_distribution_topk=2))
    store = FeatureStore(tmp_path / "top2")
    assert store.class_dist == ClassDist(2, full=False)
    checked = 0
    for img_id in store.image_ids:
        r = store[img_id]
        probs = softmax_of_the_detectors_class_scores(detector_ckpt, r.features)  # (n, 4): 3 shapes + background
        order = np.argsort(-probs, axis=1, kind="stable")[:, :2]
        assert r.class_ids.shape == r.class_probs.shape == (r.num_boxes, 2)
        np.testing.assert_array_equal(r.class_ids, order)
        np.testing.assert_allclose(r.class_probs, np.take_along_axis(probs, order, 1), rtol=1e-5, atol=1e-6)
        # the top object class and its confidence are the same numbers, the background column aside
        objects = probs[:, :3]
        np.testing.assert_allclose(r.obj_conf, objects.max(axis=1), rtol=1e-5, atol=1e-6)
        top_is_object = r.class_ids[:, 0] < 3
        np.testing.assert_array_equal(r.class_ids[top_is_object, 0], r.obj_ids[top_is_object])
        checked += r.num_boxes
    assert checked >= 16
    run(extract_cfg(**base, output=tmp_path / "full", class_distribution_topk="full"))
    full = FeatureStore(tmp_path / "full")
    assert full.class_dist == ClassDist(4, full=True)  # every class, and the background column
    r = full[store.image_ids[0]]
    assert r.class_ids is None
    np.testing.assert_allclose(
        r.class_probs, softmax_of_the_detectors_class_scores(detector_ckpt, r.features), atol=1e-6
    )
    np.testing.assert_allclose(r.class_probs.sum(axis=1), 1.0, atol=1e-5)
    run(extract_cfg(**base, output=tmp_path / "k9", class_distribution_topk=9))  # k above the class count: all
    assert FeatureStore(tmp_path / "k9").class_dist == ClassDist(4, full=True)
    run(extract_cfg(**base, output=tmp_path / "off", class_distribution_topk=0))
    assert FeatureStore(tmp_path / "off").class_dist is None and FeatureStore(tmp_path / "off").image_ids
    with pytest.raises(ValueError, match=r"top2: existing store has class_dist=ClassDist\(k=2, full=False\); asked"):
        run(extract_cfg(**base, output=tmp_path / "top2", class_distribution_topk=3))  # resuming with another k


@pytest.mark.parametrize("value", ["-1", "many", "1.5"])
def test_class_distribution_topk_config_is_checked(value):
    from lxmert_repro.cli.extract import ExtractApp
    from lxmert_repro.config_schema import ConfigError, validate_config

    with pytest.raises(ConfigError, match=rf"class_distribution_topk: .*{value}.* is not .*null, 0 .* or full"):
        validate_config(extract_cfg(input="x", output="y", class_distribution_topk=value), ExtractApp)
