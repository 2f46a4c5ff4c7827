#!/usr/bin/env python
"""Does pretraining matter? Fine-tune on 10% of easy-VQA's training questions from the pretrained model and from
random weights, same recipe otherwise, and write both test accuracies in a table.

    python scripts/ablation.py [--fraction 0.1] [--epochs 20] [--force] [--root .]   (what `make ablation` runs)

It first runs the demo's stages that it needs (detector, features, prepared data, pretraining), skipping those
already complete; the two fine-tuning runs are skipped too when complete. Output: runs/ablation/ablation.md
(+ .json) next to the runs runs/finetune_vqa/ablation_{pretrained,scratch}.
"""
from __future__ import annotations

import argparse
import json
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
    ap.add_argument("--force", action="store_true", help="redo the two fine-tuning runs even if complete")
    ap.add_argument("--root", default=".", help="where data/ and runs/ live")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    offline_env()
    t0 = time.time()
    done = [run_stage(name, cmds, marker, False) for name, cmds, marker, _ in pretraining_stages(root)]
    runs = root / "runs" / "finetune_vqa"
    common = ["experiment=easy_vqa_vqa", f"paths.root_dir={root}", f"data.train_fraction={args.fraction}",
              f"trainer.max_epochs={args.epochs}", f"trainer.eval_every_n_epochs={max(1, args.epochs // 4)}",
              "trainer.resume=auto"]
    variants = {"pretrained": [], "scratch": ["finetune.init_from=null"]}
    rows = []
    for name, extra in variants.items():
        run = f"ablation_{name}"
        cmd = [str(BIN / "lxmert-finetune"), *common, f"run_name={run}", *extra]
        stage = run_stage(f"fine-tune on {args.fraction:.0%} from {name}", [cmd], runs / run / ".done", args.force,
                          [runs / run])
        done.append(stage)
        metrics = json.loads((runs / run / "final_metrics.json").read_text())
        rows.append({"init": name, "seconds": round(stage["seconds"], 1),
                     **{k: round(v, 2) for k, v in metrics.items() if k.startswith("test/accuracy")}})
    out = root / "runs" / "ablation"
    types = sorted({k for r in rows for k in r if k.startswith("test/accuracy_")})
    lines = [f"# Pretraining ablation: fine-tuning on {args.fraction:.0%} of easy-VQA's training questions",
             "", f"{args.epochs} epochs over the subset, same recipe (experiment=easy_vqa_vqa) for both rows; test split "
             "(9,673 questions).", "",
             "| initialisation | test accuracy (%) | " + " | ".join(t.removeprefix("test/accuracy_").replace("_", "/")
                                                           for t in types) + " | fine-tuning s |",
             "|---|---|" + "---|" * len(types) + "---|"]
    for r in rows:
        lines.append(f"| {r['init']} | {r.get('test/accuracy', float('nan')):.2f} | "
                     + " | ".join(f"{r.get(t, float('nan')):.2f}" for t in types) + f" | {r['seconds']} |")
    atomic_write_text(out / "ablation.md", "\n".join(lines) + "\n")
    atomic_write_json(out / "ablation.json", {"fraction": args.fraction, "epochs": args.epochs, "rows": rows,
                                              "stages": done})
    print("\n".join(lines))
    print(f"[ablation] total {time.time() - t0:.1f}s; table: {out / 'ablation.md'}")


if __name__ == "__main__":
    main()
