#!/usr/bin/env python
"""Does pretraining matter? Fine-tune on 10% of easy-VQA's training questions from the pretrained model and from
random weights, same recipe otherwise, over several seeds, and write the test accuracies in a table.

    python scripts/ablation.py [--fraction 0.1] [--epochs 20] [--seeds 0,1,2] [--force] [--root .]
    (what `make ablation` runs)

It first runs the demo's stages that it needs (detector, features, prepared data, pretraining), skipping those
already complete; the fine-tuning runs are skipped too when complete. The seed (trainer.seed) sets the new
weights, dropout and the batch order; the 10% subset is the same in every run. Output: runs/ablation/ablation.md
(+ .json) next to the runs runs/finetune_vqa/ablation_{pretrained,scratch}_s{seed}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import BIN, offline_env, pretraining_stages, run_stage  # noqa: E402  (the demo's stages and their skip-if-complete markers)

from lxmert_repro.io_utils import atomic_write_json, atomic_write_text  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fraction", type=float, default=0.1, help="fraction of the training questions (random, seed 0)")
    ap.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs over that fraction (both runs)")
    ap.add_argument(
        "--seeds", default="0,1,2", help="comma-separated trainer seeds, one run per seed and initialisation"
    )
    ap.add_argument("--force", action="store_true", help="redo the fine-tuning runs even if complete")
    ap.add_argument("--root", default=".", help="where data/ and runs/ live")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    offline_env()
    t0 = time.time()
    done = [run_stage(name, cmds, marker, False) for name, cmds, marker, _ in pretraining_stages(root)]
    runs = root / "runs" / "finetune_vqa"
    common = [
        "experiment=easy_vqa_vqa",
        f"paths.root_dir={root}",
        f"data.train_fraction={args.fraction}",
        f"trainer.max_epochs={args.epochs}",
        f"trainer.eval_every_n_epochs={max(1, args.epochs // 4)}",
        "trainer.resume=auto",
    ]
    variants = {"pretrained": [], "scratch": ["finetune.init_from=null"]}
    seeds = [int(x) for x in args.seeds.split(",")]
    rows = []
    for seed in seeds:
        for name, extra in variants.items():
            run = f"ablation_{name}_s{seed}"
            cmd = [str(BIN / "lxmert-finetune"), *common, f"run_name={run}", f"trainer.seed={seed}", *extra]
            stage = run_stage(
                f"fine-tune on {args.fraction:.0%} from {name}, seed {seed}",
                [cmd],
                runs / run / ".done",
                args.force,
                [runs / run],
            )
            done.append(stage)
            metrics = json.loads((runs / run / "final_metrics.json").read_text())
            rows.append(
                {
                    "init": name,
                    "seed": seed,
                    "seconds": round(stage["seconds"], 1),
                    **{k: round(v, 2) for k, v in metrics.items() if k.startswith("test/accuracy")},
                }
            )
    out = root / "runs" / "ablation"
    types = sorted({k for r in rows for k in r if k.startswith("test/accuracy_")})
    cols = ["test/accuracy", *types]
    lines = [
        f"# Pretraining ablation: fine-tuning on {args.fraction:.0%} of easy-VQA's training questions",
        "",
        f"{args.epochs} epochs over the subset, same recipe (experiment=easy_vqa_vqa) for every row, seeds "
        f"{args.seeds}; test split (9,673 questions).",
        "",
        "| initialisation | seed | test accuracy (%) | "
        + " | ".join(t.removeprefix("test/accuracy_").replace("_", "/") for t in types)
        + " | fine-tuning s |",
        "|---|---|---|" + "---|" * len(types) + "---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['init']} | {r['seed']} | "
            + " | ".join(f"{r.get(c, float('nan')):.2f}" for c in cols)
            + f" | {r['seconds']} |"
        )
    summary = {}
    for name in variants:
        mine = [r for r in rows if r["init"] == name]
        summary[name] = {
            c: (statistics.mean(r[c] for r in mine), statistics.stdev(r[c] for r in mine) if len(mine) > 1 else 0.0)
            for c in cols
        }
        lines.append(
            f"| **{name}, mean ± sd** | | "
            + " | ".join(f"**{m:.2f} ± {sd:.2f}**" for m, sd in summary[name].values())
            + " | |"
        )
    atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")
    atomic_write_json(
        out / "ablation.json",
        {
            "fraction": args.fraction,
            "epochs": args.epochs,
            "seeds": seeds,
            "rows": rows,
            "summary": summary,
            "stages": done,
        },
    )
    print("\n".join(lines))
    print(f"[ablation] total {time.time() - t0:.1f}s; table: {out / 'ablation.md'}")


if __name__ == "__main__":
    main()
