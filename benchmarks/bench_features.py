#!/usr/bin/env python
"""Region features: extraction speed on CPU and feature-store random-read throughput / memory.

    python benchmarks/bench_features.py [--quick] [--tmp DIR] [--device cuda] [--only extract|store]

1. Extraction images/s (random weights, 600x800 RGB images, CPU or ``--device``): the default easy-VQA detector,
   vg_r101_c4 (300 proposals, bottom-up 36-box rule) and vg_r101_c4_port (the port's NMS loop). Whole
   ``detector.extract`` call, batch of the listed size; GPU peak memory (``max_memory_allocated``) on a device.
2. Store random reads: stores of 1,000 and 20,000 images x 36 boxes x 2048 fp16 (written to a temp dir), batches of
   256 random images stacked into (256, 36, 2048) as a collator would; samples/s and the reader process's peak RSS
   (a fresh process per store). Targets: >= 5,000 samples/s; RSS equal within 100 MB for both sizes.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def bench_extraction(name: str, n_images: int, batch: int, device: str = "cpu") -> dict:
    import torch
    from hydra import compose, initialize_config_dir

    from lxmert_repro.cli import CONFIG_DIR
    from lxmert_repro.features.detectors import build_detector

    with initialize_config_dir(str(CONFIG_DIR / "detector"), version_base=None):
        cfg = compose(name)
    torch.manual_seed(0)
    model = build_detector(cfg).eval().to(device)
    g = torch.Generator().manual_seed(0)
    imgs = [(torch.rand(3, 600, 800, generator=g) * 255).to(device) for _ in range(n_images)]
    model.extract(imgs[:batch])  # warm-up
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
    t = time.perf_counter()
    boxes = 0
    for i in range(0, n_images, batch):
        boxes += sum(int(d.num_boxes) for d in model.extract(imgs[i : i + batch]))  # int(): waits for the GPU
    dt = time.perf_counter() - t
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if cuda else None
    return {
        "detector": name,
        "images": n_images,
        "batch": batch,
        "seconds": round(dt, 2),
        "images_per_s": round(n_images / dt, 2),
        "boxes_per_image": boxes / n_images,
        "feat_dim": model.feat_dim,
        "peak_gib": peak,
    }


def write_store(path: Path, n_images: int, boxes: int = 36, dim: int = 2048) -> float:
    from lxmert_repro.features.store import FeatureStoreWriter

    rng = np.random.default_rng(0)
    block = rng.normal(size=(64, boxes, dim)).astype(np.float16)  # reused: writing speed, not RNG speed
    box = np.tile(np.array([[0, 0, 10, 10]], np.float32), (boxes, 1))
    ids = np.zeros(boxes, np.int64)
    conf = np.ones(boxes, np.float32)
    t = time.perf_counter()
    with FeatureStoreWriter(path, dim, "float16") as w:
        for i in range(n_images):
            w.add(str(i), 480, 640, box, block[i % 64], ids, conf, ids, conf)
    return time.perf_counter() - t


def vm_hwm_mb() -> float:
    """Peak RSS of this process (VmHWM; unlike ru_maxrss it is not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_worker(path: str, batches: int, batch: int, access: str) -> None:
    """Runs in a fresh process: random batches, prints json with samples/s and peak RSS."""
    from lxmert_repro.features.store import FeatureStore

    rss0 = vm_hwm_mb()
    store = FeatureStore(path, access=access)
    ids = store.image_ids
    rng = np.random.default_rng(1)
    out = np.empty((batch, 36, store.feat_dim), np.float16)
    t = time.perf_counter()
    for _ in range(batches):
        for j, k in enumerate(rng.integers(0, len(ids), batch)):
            store.read_features(ids[k], out=out[j])  # (36, 2048) straight into the batch buffer
    dt = time.perf_counter() - t
    rss = vm_hwm_mb()
    print(
        json.dumps(
            {"samples_per_s": round(batches * batch / dt), "peak_rss_mb": round(rss), "rss_before_open_mb": round(rss0)}
        )
    )


def bench_store(tmp: Path, sizes: list[int], batches: int, accesses: list[str]) -> list[dict]:
    rows = []
    for n in sizes:
        path = tmp / f"store_{n}"
        write_s = write_store(path, n)
        disk = sum(f.stat().st_size for f in path.iterdir()) / 2**30
        for access in accesses:
            res = subprocess.run(
                [sys.executable, __file__, "--read-worker", str(path), str(batches), access],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(res.stdout.strip().splitlines()[-1])
            rows.append({"images": n, "access": access, "disk_gb": round(disk, 2), "write_s": round(write_s, 1), **r})
        shutil.rmtree(path)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--tmp", default=None, help="directory for the temporary stores (needs ~3 GB)")
    ap.add_argument("--only", choices=["extract", "store"], default=None)
    ap.add_argument("--device", default="cpu", help="extraction device: cpu or cuda")
    ap.add_argument("--read-worker", nargs=3, metavar=("STORE", "BATCHES", "ACCESS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.read_worker:
        read_worker(args.read_worker[0], int(args.read_worker[1]), 256, args.read_worker[2])
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench_features_", dir=args.tmp))
    try:
        if args.only != "store":
            extraction_table(args.quick, args.device)
        if args.only != "extract":
            store_table(tmp, args.quick)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def extraction_table(quick: bool, device: str = "cpu") -> None:
    import torch

    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else "CPU"
    print(f"== extraction ({where}, random weights, 600x800 images)")
    print(
        f"{'detector':<18} {'images':>6} {'batch':>5} {'s':>8} {'images/s':>9} {'boxes/img':>9} {'feat':>5} {'peak GiB':>8}"
    )
    runs = [
        ("easy_vqa_small", 16 if quick else 64, 16),
        ("vg_r101_c4", 1 if quick else 2, 1),
        ("vg_r101_c4_port", 1 if quick else 2, 1),
    ]
    if device.startswith("cuda"):
        runs = [
            ("easy_vqa_small", 256, 64),
            ("vg_r101_c4", 64, 1),
            ("vg_r101_c4", 64, 8),
            ("vg_r101_c4_port", 64, 1),
            ("vg_r101_c4_port", 64, 8),
        ]
    for name, n, b in runs:
        r = bench_extraction(name, n, b, device)
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(
            f"{r['detector']:<18} {r['images']:>6} {r['batch']:>5} {r['seconds']:>8} {r['images_per_s']:>9} "
            f"{r['boxes_per_image']:>9.1f} {r['feat_dim']:>5} {peak:>8}"
        )


def store_table(tmp: Path, quick: bool) -> None:
    print("\n== feature store random reads (batch 256 x 36 x 2048 fp16)")
    sizes = [1000, 20000]
    rows = bench_store(tmp, sizes, batches=8 if quick else 30, accesses=["pread"] if quick else ["pread", "mmap"])
    print(f"{'images':>7} {'access':>6} {'disk GB':>7} {'write s':>7} {'samples/s':>9} {'peak RSS MB':>11}")
    for r in rows:
        print(
            f"{r['images']:>7} {r['access']:>6} {r['disk_gb']:>7} {r['write_s']:>7} {r['samples_per_s']:>9} {r['peak_rss_mb']:>11}"
        )
    pread = {r["images"]: r for r in rows if r["access"] == "pread"}
    drss = abs(pread[20000]["peak_rss_mb"] - pread[1000]["peak_rss_mb"])
    worst = min(r["samples_per_s"] for r in pread.values())
    print(f"\nRSS difference 1k vs 20k (pread): {drss} MB (target <= 100); slowest: {worst} samples/s (target >= 5000)")


if __name__ == "__main__":
    main()
