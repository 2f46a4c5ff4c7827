#!/usr/bin/env python
"""LXMERT, VisualBERT and ViLBERT side by side: same features, pretraining data and steps, fine-tuning recipe.

    python scripts/compare_architectures.py [--models lxmert_small,visualbert_small,vilbert_small]
        [--seeds 0,1,2] [--pretrain-epochs 1] [--vqa-epochs 1] [--nlvr2-epochs 2] [--force] [--root .]
    (what `make compare` runs)

It first runs the demo's stages it needs (detector, features, prepared easy-VQA data, the NLVR2-format pair task),
skipping those already complete. Then, per model and seed: pretraining (`experiment=easy_vqa_pretrain`, each
architecture trains the objectives it has), fine-tuning on easy-VQA (`experiment=easy_vqa_vqa`, from the pretrained
model) and on the pair task (`experiment=easy_vqa_nlvr2`, from that VQA model's encoder, as in the demo), every
run with `model=<name>` and `trainer.seed=<seed>` as the only differences. The three `*_small` configs are sized
to the same parameter count (the table states them).

Output in runs/compare/: compare.md (accuracy mean ± sd over seeds per task, parameters, training and evaluation
samples/s), compare.json (every run) and compare.png. Runs live under runs/{pretrain,finetune_vqa,finetune_nlvr2}/
compare_<model>_s<seed>; complete ones are skipped unless --force.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BIN, nlvr2_stages, offline_env, pretraining_stages, run_stage  # noqa: E402

from lxmert_repro.io_utils import atomic_write_json, atomic_write_text  # noqa: E402
from lxmert_repro.training.tracking import read_metrics  # noqa: E402

TASKS = {"vqa": ("easy-VQA", "easy_vqa_vqa"), "nlvr2": ("NLVR2-format pairs", "easy_vqa_nlvr2")}


def data_stages(root: Path) -> list:
    """The demo's stages up to the prepared data (its LXMERT pretraining run is not needed) and the pair task's."""
    pre = [s for s in pretraining_stages(root) if s[0] != "pretraining"]
    return pre + nlvr2_stages(root, with_finetunes=False)


def train_speed(run: Path) -> float:
    """Median training samples/s over the run's log steps (the first is skipped: it includes the warm-up)."""
    rows = [r["samples_per_s"] for r in read_metrics(run) if "samples_per_s" in r]
    return statistics.median(rows[1:] or rows)


def parameters(run: Path) -> tuple[int, int]:
    """(encoder, whole model) parameter counts of a run's saved model."""
    from lxmert_repro.modeling import load_model

    model = load_model(str(run / "model_last"))
    encoder = getattr(model, model.config.ENCODER_PREFIX)
    return sum(p.numel() for p in encoder.parameters()), sum(p.numel() for p in model.parameters())


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), statistics.stdev(xs) if len(xs) > 1 else 0.0


def run_one(root: Path, model: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    """Pretraining and both fine-tunings of one model and seed; the numbers the table needs."""
    runs, name = root / "runs", f"compare_{model}_s{seed}"
    common = [f"paths.root_dir={root}", f"run_name={name}", f"model={model}", f"trainer.seed={seed}"]
    common += ["trainer.resume=auto"]
    pre = runs / "pretrain" / name
    stage = run_stage(
        f"pretrain {model}, seed {seed}",
        [
            [
                str(BIN / "lxmert-pretrain"),
                "experiment=easy_vqa_pretrain",
                *common,
                f"trainer.max_epochs={args.pretrain_epochs}",
                *([f"trainer.max_steps={args.pretrain_steps}"] if args.pretrain_steps else []),
            ]
        ],
        pre / ".done",
        args.force,
        [pre],
    )
    row: dict[str, Any] = {"model": model, "seed": seed, "pretrain_s": round(stage["seconds"], 1)}
    init = pre / "model_last"
    for task, (_, experiment) in TASKS.items():  # vqa first: the pair task starts from its model
        run = runs / f"finetune_{task}" / name
        epochs = args.vqa_epochs if task == "vqa" else args.nlvr2_epochs
        cmd = [
            str(BIN / "lxmert-finetune"),
            f"experiment={experiment}",
            *common,
            f"finetune.init_from={init}",
            f"trainer.max_epochs={epochs}",
            f"data.train_fraction={args.train_fraction}",
        ]
        stage = run_stage(f"fine-tune {model} on {task}, seed {seed}", [cmd], run / ".done", args.force, [run])
        final = json.loads((run / "final_metrics.json").read_text())
        row[f"{task}_accuracy"] = final["test/accuracy"]
        row[f"{task}_train_samples_per_s"] = train_speed(run)
        row[f"{task}_eval_samples_per_s"] = final["test/samples_per_s"]
        row[f"{task}_s"] = round(stage["seconds"], 1)
        if task == "vqa":
            row["encoder_parameters"], row["vqa_parameters"] = parameters(run)
            init = run / "model_last"
    return row


def table(
    rows: list[dict[str, Any]], models: list[str], args: argparse.Namespace, seconds: float
) -> tuple[str, dict[str, dict[str, tuple[float, float]]]]:
    """The markdown table (means ± sd per model, then every run) and the summary it was made from."""
    lines = [
        "# Architectures compared on easy-VQA and the NLVR2-format pair task",
        "",
        f"Same features (the demo's easy-VQA detector), pretraining data and epochs ({args.pretrain_epochs}), "
        f"fine-tuning recipes (experiment=easy_vqa_vqa for {args.vqa_epochs} epochs, experiment=easy_vqa_nlvr2 "
        f"from that VQA model's encoder for {args.nlvr2_epochs}"
        + (f"; pretraining stopped at {args.pretrain_steps} steps" if args.pretrain_steps else "")
        + (f"; fine-tuning on {args.train_fraction:.0%} of each training set" if args.train_fraction < 1 else "")
        + f"); `model=` and the seed are the only differences; seeds {args.seeds}. Accuracy on "
        "the test splits, mean ± sd over seeds; samples/s are medians over the runs' log steps (training) and the "
        "test pass (evaluation), on this machine (other jobs running beside it slow them down). Total "
        f"{seconds / 60:.1f} min.",
        "",
        "| model | encoder params | VQA model params | easy-VQA acc. (%) | pairs acc. (%) | train samples/s "
        "(VQA) | eval samples/s (VQA) | train samples/s (pairs) | eval samples/s (pairs) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    summary = {}
    for m in models:
        mine = [r for r in rows if r["model"] == m]
        s = {k: mean_sd([r[k] for r in mine]) for k in mine[0] if k not in ("model", "seed")}
        summary[m] = s
        lines.append(
            f"| {m} | {mine[0]['encoder_parameters']:,} | {mine[0]['vqa_parameters']:,} | "
            f"{s['vqa_accuracy'][0]:.2f} ± {s['vqa_accuracy'][1]:.2f} | "
            f"{s['nlvr2_accuracy'][0]:.2f} ± {s['nlvr2_accuracy'][1]:.2f} | "
            + " | ".join(f"{s[f'{t}_{k}_samples_per_s'][0]:.0f}" for t in TASKS for k in ("train", "eval"))
            + " |"
        )
    lines += ["", "Per run:", "", "| model | seed | easy-VQA acc. | pairs acc. | pretrain s | VQA s | pairs s |"]
    lines.append("|---|---|---|---|---|---|---|")
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['vqa_accuracy']:.2f} | {r['nlvr2_accuracy']:.2f} | "
            f"{r['pretrain_s']} | {r['vqa_s']} | {r['nlvr2_s']} |"
        )
    return "\n".join(lines) + "\n", summary


def plot(summary: dict[str, dict[str, tuple[float, float]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    names = list(summary)
    for ax, (task, (title, _)) in zip(axes, TASKS.items()):
        means = [summary[m][f"{task}_accuracy"][0] for m in names]
        sds = [summary[m][f"{task}_accuracy"][1] for m in names]
        ax.bar(names, means, yerr=sds, capsize=4, color=["#4c72b0", "#dd8452", "#55a868"][: len(names)])
        ax.set_title(title)
        ax.set_ylabel("test accuracy (%)")
        ax.set_ylim(max(0.0, min(means) - 10), 100)
        ax.tick_params(axis="x", labelrotation=15)
    fig.tight_layout()
    tmp = out.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lxmert_small,visualbert_small,vilbert_small", help="configs/model names")
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated trainer seeds (pretraining and fine-tuning)")
    ap.add_argument("--pretrain-epochs", type=int, default=1)
    ap.add_argument("--vqa-epochs", type=int, default=1)
    ap.add_argument("--nlvr2-epochs", type=int, default=2)
    ap.add_argument("--pretrain-steps", type=int, default=None, help="stop pretraining after N steps (smoke runs)")
    ap.add_argument("--train-fraction", type=float, default=1.0, help="fine-tune on this fraction (smoke runs)")
    ap.add_argument("--force", action="store_true", help="redo the comparison's runs even if complete")
    ap.add_argument("--root", default=".", help="where data/ and runs/ live")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    offline_env()
    t0 = time.time()
    stages = [run_stage(name, cmds, marker, False) for name, cmds, marker, _ in data_stages(root)]
    models = args.models.split(",")
    rows = [run_one(root, m, int(s), args) for s in args.seeds.split(",") for m in models]
    seconds = time.time() - t0
    out = root / "runs" / "compare"
    out.mkdir(parents=True, exist_ok=True)
    text, summary = table(rows, models, args, seconds)
    atomic_write_text(out / "compare.md", text)
    atomic_write_json(out / "compare.json", {"args": vars(args), "rows": rows, "summary": summary, "stages": stages})
    plot(summary, out / "compare.png")
    print(text)
    print(f"[compare] total {seconds / 60:.1f} min; table: {out / 'compare.md'}, plot: {out / 'compare.png'}")


if __name__ == "__main__":
    main()
