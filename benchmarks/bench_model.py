"""Training-step throughput: our LxmertForPreTraining vs transformers.LxmertForPreTraining.

Same config, same batch, same weights, same optimizer (AdamW, grad clip 1.0), same process; the
implementations run interleaved (round-robin) and each figure is the median over rounds, because the
machine is shared. Prints a table of samples/s and the ratio to the reference.

On a GPU each row also gives the peak memory of one training step (its own pass, after the timed rounds).
``--compile MODE`` adds ours under ``torch.compile(mode=MODE, fullgraph=True)`` with dense predictions
(one graph per step; the trainer's ``trainer.compile``): ``default``, or ``reduce-overhead`` for CUDA graphs;
``--compile-bf16`` compiles that row in bf16 autocast; ``--compile-reference`` adds the reference compiled the same
way (graph breaks allowed), to tell what compiling gives from what our implementation gives.

    python benchmarks/bench_model.py [--quick] [--rounds R] [--steps S] [--device cuda]
                                     [--compile {default,reduce-overhead,max-autotune}] [--compile-reference] [--compile-bf16]
                                     [--plan lxmert_base:8,lxmert_base:256] [--layers 9,5,5]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lxmert_repro.cli import CONFIG_DIR as PACKAGE_CONFIG_DIR  # noqa: E402
from lxmert_repro.modeling import LxmertConfig, LxmertForPreTraining  # noqa: E402
from lxmert_repro.modeling.config import load_config  # noqa: E402
from lxmert_repro.modeling.convert import config_to_transformers, ours_to_reference_state  # noqa: E402

CONFIG_DIR = PACKAGE_CONFIG_DIR / "model"


def make_batch(cfg: LxmertConfig, b: int, t: int = 20, n: int = 36, seed: int = 0) -> dict[str, torch.Tensor]:
    """A pretraining batch shaped like LXMERT's: 20 tokens, 36 boxes, 15% of tokens and boxes masked."""
    g = torch.Generator().manual_seed(seed)
    mlm = torch.rand(b, t, generator=g) < 0.15
    mlm[:, 1] = True
    masked_boxes = torch.rand(b, n, generator=g) < 0.15
    itm = (torch.rand(b, generator=g) < 0.5).long()
    qa = torch.randint(0, cfg.num_qa_labels, (b,), generator=g).masked_fill(itm == 0, -100)
    return dict(
        input_ids=torch.randint(1, cfg.vocab_size, (b, t), generator=g),
        attention_mask=torch.ones(b, t, dtype=torch.long),
        token_type_ids=torch.zeros(b, t, dtype=torch.long),
        visual_feats=torch.rand(b, n, cfg.visual_feat_dim, generator=g),
        visual_boxes=torch.rand(b, n, 4, generator=g),
        visual_mask=torch.ones(b, n, dtype=torch.long),
        mlm_labels=torch.randint(0, cfg.vocab_size, (b, t), generator=g).masked_fill(~mlm, -100),
        itm_labels=itm,
        obj_labels=torch.randint(0, cfg.num_object_labels, (b, n), generator=g),
        obj_conf=torch.rand(b, n, generator=g),
        attr_labels=torch.randint(0, cfg.num_attr_labels, (b, n), generator=g),
        attr_conf=torch.rand(b, n, generator=g),
        feat_targets=torch.rand(b, n, cfg.visual_feat_dim, generator=g),
        masked_boxes=masked_boxes,
        qa_labels=qa,
    )


def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
    """The same optimizer for every implementation: AdamW, fused single-pass kernel where torch has one."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01, eps=1e-6)


def training_step(model: torch.nn.Module, forward_loss: Callable[[], torch.Tensor]) -> Callable[[], float]:
    """One optimizer step around ``forward_loss``: backward, grad-norm clip 1.0, AdamW; the same for every row."""
    opt = make_optimizer(model)

    def step() -> float:
        torch.compiler.cudagraph_mark_step_begin()  # a new iteration for CUDA graphs (no-op otherwise)
        loss = forward_loss()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().item()

    return step


def ours_step_fn(model, batch, autocast_dtype=None):
    device_type = next(model.parameters()).device.type

    def forward_loss() -> torch.Tensor:
        with torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else nullcontext():
            return model(**batch).loss

    return training_step(model, forward_loss)


def reference_step_fn(model, batch):
    kwargs = dict(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        visual_feats=batch["visual_feats"],
        visual_pos=batch["visual_boxes"],
        visual_attention_mask=batch["visual_mask"],
        labels=batch["mlm_labels"],
        matched_label=batch["itm_labels"],
        ans=batch["qa_labels"],
        obj_labels={
            "obj": (batch["obj_labels"], batch["obj_conf"]),
            "attr": (batch["attr_labels"], batch["attr_conf"]),
            "feat": (batch["feat_targets"], batch["masked_boxes"].float()),
        },
    )
    return training_step(model, lambda: model(**kwargs).loss)


class _OpCounter(TorchDispatchMode):
    """Counts the ATen operators a step dispatches: on a GPU each is (at least) one kernel launch."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls += 1
        return func(*args, **(kwargs or {}))


def step_work(step) -> tuple[float, int]:
    """(GFLOP, ATen operator calls) of one training step (forward, backward, optimizer)."""
    with FlopCounterMode(display=False) as flops, _OpCounter() as ops:
        step()
    return flops.get_total_flops() / 1e9, ops.calls


def bench_config(
    name: str,
    batch_size: int,
    rounds: int,
    steps: int,
    device: torch.device,
    compile_mode: str | None = None,
    layers: tuple[int, int, int] | None = None,
    compile_reference: bool = False,
    compile_bf16: bool = False,
) -> list[tuple]:
    cfg = load_config(CONFIG_DIR / f"{name}.yaml")
    if layers:  # e.g. the tiny widths at the base depth: a step bound by per-operator overhead, as batch 8 on a GPU
        cfg = dataclasses.replace(cfg, l_layers=layers[0], r_layers=layers[1], x_layers=layers[2])
        name = f"{name}@{'/'.join(map(str, layers))}"
    torch.manual_seed(0)
    ours = LxmertForPreTraining(cfg).train()
    tcfg = config_to_transformers(cfg)
    ref = transformers.LxmertForPreTraining(tcfg).train()
    ref.load_state_dict(ours_to_reference_state(ours))  # same starting weights
    models = {"transformers fp32": ref, "ours fp32": ours, "ours bf16 autocast": LxmertForPreTraining(cfg).train()}
    compiled = f"ours {'bf16 autocast' if compile_bf16 else 'fp32'} compiled ({compile_mode})"
    compiled_ref = f"transformers fp32 compiled ({compile_mode})"
    if compile_mode:  # static shapes: logits at every position (same loss), so the step is one graph
        models[compiled] = LxmertForPreTraining(dataclasses.replace(cfg, sparse_predictions=False)).train()
    for m in models.values():
        if m is not ours and m is not ref:
            m.load_state_dict(ours.state_dict())
        m.to(device)
    batch = {k: v.to(device) for k, v in make_batch(cfg, batch_size).items()}
    impls = {
        "transformers fp32": reference_step_fn(ref, batch),
        "ours fp32": ours_step_fn(ours, batch),
        "ours bf16 autocast": ours_step_fn(models["ours bf16 autocast"], batch, torch.bfloat16),
    }
    for fn in impls.values():  # warm-up (allocator, kernels, optimizer state)
        fn()
        fn()
    compiled_steps = {}
    if compile_mode:
        compiled_steps[compiled] = lambda model=models[compiled]: ours_step_fn(
            torch.compile(model, mode=compile_mode, fullgraph=True),
            batch,
            torch.bfloat16 if compile_bf16 else None,
        )
    if compile_mode and compile_reference:  # the fair question: does the reference gain as much from compiling?
        ref_c = transformers.LxmertForPreTraining(tcfg).train().to(device)
        ref_c.load_state_dict(ref.state_dict())
        compiled_steps[compiled_ref] = lambda: reference_step_fn(torch.compile(ref_c, mode=compile_mode), batch)
    for k, make_step in compiled_steps.items():  # a failed compilation loses its own row, not the run
        try:
            t0 = time.perf_counter()
            fn = make_step()
            fn()
            fn()
            impls[k] = fn
            print(f"[{name} b{batch_size}] {k}: compiled and warmed up in {time.perf_counter() - t0:.0f} s", flush=True)
        except Exception as e:
            print(
                f"[{name} b{batch_size}] {k} failed, row dropped: {type(e).__name__}: "
                f"{str(e).strip().splitlines()[0][:300]}",
                flush=True,
            )
    times: dict[str, list[float]] = {k: [] for k in impls}
    for _ in range(rounds):
        for k, fn in impls.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[k].append((time.perf_counter() - t0) / steps)
    peak = {k: float("nan") for k in impls}
    if device.type == "cuda":  # peak memory of one step, each implementation on its own
        for k, fn in impls.items():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
            fn()
            peak[k] = torch.cuda.max_memory_allocated(device) / 2**30
    # Work per step, counted on the eager steps: where a device is compute bound, the reference's GFLOP / ours is
    # the most any speed-up can be without changing the arithmetic; where it is bound by per-operator overhead
    # (small batches on a GPU), the operator count is what matters.
    work = {k: (step_work(fn) if k not in compiled_steps else (float("nan"), 0)) for k, fn in impls.items()}
    base = statistics.median(times["transformers fp32"])
    rows = []
    for k, ts in times.items():
        med = statistics.median(ts)
        rows.append((name, batch_size, k, med * 1000, batch_size / med, base / med, *work[k], peak[k]))
    del ours, ref, models, impls, compiled_steps
    torch._dynamo.reset()  # the next plan entry compiles fresh models, not guarded variants of these
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny config only, few rounds (seconds)")
    p.add_argument("--rounds", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="intra-op threads (default 1: on a shared machine, preempted OpenMP threads make "
        "multi-threaded timings erratic)",
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    p.add_argument(
        "--compile",
        default=None,
        choices=["default", "reduce-overhead", "max-autotune"],
        help="also time ours under torch.compile with this mode (fullgraph, dense predictions)",
    )
    p.add_argument(
        "--compile-reference",
        action="store_true",
        help="with --compile, also time the reference under torch.compile (same mode, graph breaks allowed)",
    )
    p.add_argument("--compile-bf16", action="store_true", help="with --compile, compile ours in bf16 autocast")
    p.add_argument("--layers", default=None, help="override the layer counts, e.g. 9,5,5 (language,object,cross)")
    p.add_argument("--plan", default=None, help="comma-separated config:batch pairs, e.g. lxmert_base:8,lxmert_base:64")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    if args.plan:
        pairs = [(c, int(b)) for c, b in (x.split(":") for x in args.plan.split(","))]
        plan = [(c, b, args.rounds or (10 if gpu else 4), args.steps or (10 if gpu else 1)) for c, b in pairs]
    elif args.quick:
        plan = [("lxmert_tiny", 32, args.rounds or 5, args.steps or 5)]
    else:
        plan = [
            ("lxmert_tiny", 32, args.rounds or 7, args.steps or (20 if gpu else 5)),
            ("lxmert_base", 8, args.rounds or (10 if gpu else 4), args.steps or (10 if gpu else 1)),
        ]
    where = torch.cuda.get_device_name(device) if gpu else f"cpu, threads {torch.get_num_threads()}"
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, device {where}")
    print(
        f"{'config':<18} {'batch':>5}  {'implementation':<44} {'ms/step':>9} {'samples/s':>10} {'vs ref':>7}"
        f" {'GFLOP/step':>10} {'ATen ops':>8}" + (f" {'peak GiB':>9}" if gpu else "")
    )
    layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else None
    for name, b, rounds, steps in plan:
        for row in bench_config(
            name, b, rounds, steps, device, args.compile, layers, args.compile_reference, args.compile_bf16
        ):
            print(
                f"{row[0]:<18} {row[1]:>5}  {row[2]:<44} {row[3]:>9.1f} {row[4]:>10.2f} {row[5]:>6.2f}x"
                f" {row[6]:>10.2f} {row[7] or '':>8}" + (f" {row[8]:>9.2f}" if gpu else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
