"""Optimizer step time on the base model's parameters: torch AdamW (fused, foreach) vs BertAdam (loop, foreach, fused).

Only ``optimizer.step()`` is timed, on the 472 parameter tensors (228M values) of ``LxmertForPreTraining`` with
fixed random gradients. The optimizers run interleaved (round-robin) and each figure is the median over rounds; to
fit in memory they share one pair of moment buffers (the values do not change the time). BertAdam's fast paths
make the same update as its loop (tests/test_optim.py).

    python benchmarks/bench_optim.py [--quick] [--config lxmert_base] [--rounds R] [--threads 1,2] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lxmert_repro.modeling import LxmertForPreTraining  # noqa: E402
from lxmert_repro.modeling.config import load_config  # noqa: E402
from lxmert_repro.training.optim import BertAdam  # noqa: E402

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs" / "model"


def make_optimizers(params: list[torch.nn.Parameter], device: torch.device) -> dict[str, torch.optim.Optimizer]:
    kw = dict(lr=1e-4, weight_decay=0.01, eps=1e-6)
    opts: dict[str, torch.optim.Optimizer] = {
        "AdamW fused": torch.optim.AdamW(params, fused=True, **kw),
        "AdamW foreach": torch.optim.AdamW(params, foreach=True, **kw),
    }
    for impl in ("loop", "foreach", "fused"):
        opts[f"BertAdam {impl}"] = BertAdam(params, implementation=impl, **kw)
    return opts


def share_moments(opts: dict[str, torch.optim.Optimizer], params: list[torch.nn.Parameter]) -> None:
    """Step each optimizer once (its state, compiled kernels), then point every state at one set of moments."""
    shared = None
    for opt in opts.values():
        opt.step()
        if shared is None:
            shared = {id(p): (opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"]) for p in params}
        for p in params:
            opt.state[p]["exp_avg"], opt.state[p]["exp_avg_sq"] = shared[id(p)]


def time_steps(opts: dict[str, torch.optim.Optimizer], rounds: int, device: torch.device) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in opts}
    for _ in range(rounds):
        for k, opt in opts.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) * 1000 for k, v in times.items()}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny config, 1 thread (seconds)")
    p.add_argument("--config", default=None, help="model config name (default lxmert_base; --quick: lxmert_tiny)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--threads", default=None, help="comma-separated intra-op thread counts (default 1,2)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    name = args.config or ("lxmert_tiny" if args.quick else "lxmert_base")
    rounds = args.rounds or (20 if args.quick else 7)
    threads = [int(t) for t in (args.threads or ("1" if args.quick else "1,2")).split(",")]
    torch.manual_seed(0)
    params = [q for q in LxmertForPreTraining(load_config(CONFIG_DIR / f"{name}.yaml")).to(device).parameters()]
    for q in params:
        q.grad = torch.randn_like(q) * 1e-3
    n = sum(q.numel() for q in params)
    print(
        f"torch {torch.__version__}, {name}: {len(params)} parameter tensors, {n / 1e6:.1f}M values, "
        f"device {args.device}, {rounds} rounds"
    )
    print(f"{'threads':>7}  {'optimizer':<16} {'ms/step':>9} {'vs AdamW fused':>15}")
    for t in threads:
        torch.set_num_threads(t)
        torch._dynamo.reset()  # compiled CPU kernels fix their thread count when generated
        opts = make_optimizers(params, device)
        share_moments(opts, params)
        ms = time_steps(opts, rounds, device)
        for k, v in ms.items():
            print(f"{t:>7}  {k:<16} {v:>9.1f} {v / ms['AdamW fused']:>14.2f}x", flush=True)
        del opts


if __name__ == "__main__":
    main()
