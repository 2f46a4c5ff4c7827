"""Data-loader throughput for LXMERT pretraining batches (256 pairs, 36 boxes x 2048-d features).

Builds a feature store (float16, as extraction writes it) and a prepared Arrow split in a temporary
directory, then iterates ``DataLoader(PretrainDataset, PretrainCollator)`` with 0 and 2 workers and
reports samples/s and peak RSS (main process; and main + workers, sampled). Target: >= 2,000
samples/s with 2 workers.

    python benchmarks/bench_data.py [--quick] [--images 2000] [--batches 20]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, RandomSampler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lxmert_repro.data.answers import AnswerVocab  # noqa: E402
from lxmert_repro.data.formats.example import Example  # noqa: E402
from lxmert_repro.data.prepare import save_split  # noqa: E402
from lxmert_repro.data.pretrain_dataset import PretrainCollator, PretrainDataset  # noqa: E402
from lxmert_repro.features.store import FeatureStoreWriter  # noqa: E402


def build(root: Path, images: int, per_image: int, boxes: int = 36, dim: int = 2048) -> None:
    rng = np.random.default_rng(0)
    with FeatureStoreWriter(root / "store", feat_dim=dim, feat_dtype="float16") as w:
        for i in range(images):
            bx = np.sort(rng.uniform(0, 600, (boxes, 4)).astype(np.float32).reshape(boxes, 2, 2), axis=1).reshape(
                boxes, 4
            )
            w.add(
                f"img{i}",
                480,
                640,
                bx[:, [0, 2, 1, 3]],
                rng.standard_normal((boxes, dim), np.float32),
                rng.integers(0, 1600, boxes),
                rng.uniform(size=boxes),
                rng.integers(0, 400, boxes),
                rng.uniform(size=boxes),
            )
    exs, ids = [], []
    for i in range(images):
        for k in range(per_image):
            labels = {"yes": 1.0, "no": 0.3} if k % 3 == 0 else {}
            exs.append(Example(f"img{i}", "s", "vqa" if labels else "mscoco", -1, labels, ""))
            ids.append([101] + rng.integers(1000, 30000, int(rng.integers(8, 19))).tolist() + [102])
    save_split(exs, ids, root / "train")


class PeakRSS:
    """Samples the RSS of this process and its children every 20 ms."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                total = me.memory_info().rss + sum(c.memory_info().rss for c in me.children(recursive=True))
            except psutil.Error:
                continue
            self.peak = max(self.peak, total)
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()


def run(root: Path, workers: int, batches: int, batch_size: int, feat_dtype: str | None) -> dict:
    import datasets

    split = datasets.load_from_disk(str(root / "train"))
    ds = PretrainDataset(
        split,
        root / "store",
        pad_token_id=0,
        cls_token_id=101,
        sep_token_id=102,
        mask_token_id=103,
        vocab_size=30522,
        answers=AnswerVocab(["yes", "no"]),
        seed=0,
    )
    loader = DataLoader(
        ds,
        batch_size=batch_size,
        sampler=RandomSampler(ds, num_samples=batch_size * (batches + 4)),
        collate_fn=PretrainCollator(pad_token_id=0, feat_dtype=feat_dtype),
        num_workers=workers,
        drop_last=True,
        persistent_workers=False,
        prefetch_factor=2 if workers else None,
    )
    with PeakRSS() as rss:
        it = iter(loader)
        for _ in range(2):  # warm-up: worker start, page cache
            next(it)
        cpu0 = tree_cpu_seconds()
        t0 = time.perf_counter()
        n = 0
        for i in range(batches):
            n += next(it).batch_size
        dt = time.perf_counter() - t0
        cpu = tree_cpu_seconds() - cpu0  # main + workers, measured while the workers are alive
        for _ in it:
            pass
    return {
        "workers": workers,
        "feat_dtype": feat_dtype or "float16 (store)",
        "samples_per_s": n / dt,
        "ms_per_batch": 1000 * dt / (n / batch_size),
        "samples_per_cpu_s": n / cpu,
        "peak_rss_total_mb": rss.peak / 2**20,
        "peak_rss_main_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live children (the DataLoader workers)."""
    procs = [psutil.Process()] + psutil.Process().children(recursive=True)
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
            total += t.user + t.system
        except psutil.Error:
            pass
    return total


def measure_in_subprocess(root: Path, workers: int, batches: int, batch_size: int, feat_dtype: str | None) -> dict:
    """Each configuration in a fresh process, so peak RSS is its own (not the store builder's)."""
    import json
    import subprocess

    cmd = [
        sys.executable,
        __file__,
        "--measure",
        str(root),
        "--workers",
        str(workers),
        "--batches",
        str(batches),
        "--batch-size",
        str(batch_size),
        "--feat-dtype",
        feat_dtype or "store",
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--measure", help=argparse.SUPPRESS)  # internal: one configuration, prints json
    ap.add_argument("--workers", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--feat-dtype", default="store", help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="small store, few batches")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=256)
    args = ap.parse_args()
    if args.measure:
        import json

        torch.set_num_threads(1)  # as in a DataLoader worker; the in-process (0 workers) row uses one core too
        dtype = None if args.feat_dtype == "store" else args.feat_dtype
        print(json.dumps(run(Path(args.measure), args.workers, args.batches, args.batch_size, dtype)))
        return
    if args.quick:
        args.images, args.batches = 600, 6
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t = time.perf_counter()
        build(root, args.images, per_image=10)
        print(
            f"built store: {args.images} images x 36 boxes x 2048 (float16), {args.images * 10} pairs "
            f"in {time.perf_counter() - t:.1f}s"
        )
        rows = [
            measure_in_subprocess(root, w, args.batches, args.batch_size, dt)
            for w, dt in ((0, None), (2, None), (2, "float32"))
        ]
    print(
        f"\nPretraining loader, batch {args.batch_size}, 36 boxes x 2048-d, {args.batches} timed batches, "
        f"{psutil.cpu_count()} CPUs, load average {psutil.getloadavg()[0]:.1f}"
    )
    print(
        f"{'workers':>7} | {'batch features':>15} | {'samples/s':>9} | {'ms/batch':>8} | {'samples/CPU-s':>13} | "
        f"{'peak RSS main+workers (MB)':>26} | {'peak RSS main (MB)':>18}"
    )
    print("(RSS main+workers sums each process's RSS: shared-memory batches are counted in both; an upper bound)")
    for r in rows:
        print(
            f"{r['workers']:>7} | {r['feat_dtype']:>15} | {r['samples_per_s']:>9.0f} | {r['ms_per_batch']:>8.1f} | "
            f"{r['samples_per_cpu_s']:>13.0f} | "
            f"{r['peak_rss_total_mb']:>26.0f} | {r['peak_rss_main_mb']:>18.0f}"
        )
    target = rows[1]["samples_per_s"] >= 2000
    print(f"\ntarget >= 2,000 samples/s with 2 workers: {'met' if target else 'NOT met'} (measured)")
    print(
        f"CPU cost: {rows[1]['samples_per_cpu_s']:.0f} samples per CPU-second with 2 workers, so two otherwise idle "
        f"cores give at most ~{2 * rows[1]['samples_per_cpu_s']:.0f} samples/s (samples/s above depends on the "
        f"machine's load: load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs)"
    )


if __name__ == "__main__":
    main()
