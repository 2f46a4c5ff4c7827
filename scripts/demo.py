#!/usr/bin/env python
"""The default end-to-end run on easy-VQA: raw pixels -> detector -> features -> pretraining -> VQA -> report.

    python scripts/demo.py [--force] [--root .]      (what `make demo` runs)

Each stage is one of the project's commands; a stage whose outputs are complete (its marker file exists) is
skipped and says so, unless --force. Interrupted stages resume on their own (extraction and training resume).
The report lands in runs/demo/: report.md, loss curves and attention pictures.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir, easy_vqa_root

BIN = Path(sys.executable).parent


Stage = tuple[str, list[list[str]], Path, list[Path]]


def stages(root: Path) -> list[Stage]:
    """Every stage of the demo: the pretraining pipeline, then VQA fine-tuning and test."""
    return pretraining_stages(root) + [vqa_stage(root)]


def pretraining_stages(root: Path) -> list[Stage]:
    """(name, commands, marker, outputs) from pixels to the pretrained model (the ablation starts from these).

    The marker is written after every command of the stage succeeded; the outputs are what --force deletes first
    (otherwise the stage's own resume would find its old results)."""
    data, runs = root / "data", root / "runs"
    det, feats = data / "easy_vqa" / "detector", data / "easy_vqa" / "features"
    py = [sys.executable]
    return [
        ("coco annotations", [py + ["scripts/easy_vqa_to_coco.py", "--out-dir", str(data / "easy_vqa_coco")]],
         data / "easy_vqa_coco" / ".done", [data / "easy_vqa_coco"]),
        ("detector training", [[str(BIN / "lxmert-train-detector"), f"output_dir={det}",
                                f"data.train_json={data / 'easy_vqa_coco' / 'train.json'}",
                                f"data.val_json={data / 'easy_vqa_coco' / 'test.json'}"]], det / ".done", [det]),
        ("feature extraction", [[str(BIN / "lxmert-extract"), f"input={easy_vqa_image_dir(split)}", f"output={feats}",
                                 f"checkpoint={det / 'detector'}", f"image_id_prefix={split}_"] for split in ("train", "test")],
         feats / ".done", [feats]),
        # The VQA split reuses the pretraining tokenizer: fine-tuning must see the pretrained model's vocabulary.
        ("prepare (tokenizer, answers, Arrow)", [
            [str(BIN / "lxmert-prepare"), "data=easy_vqa_pretrain", f"features={feats}", f"paths.root_dir={root}"],
            [str(BIN / "lxmert-prepare"), "data=easy_vqa", f"features={feats}", f"paths.root_dir={root}",
             "tokenizer=bert_base_uncased", f"tokenizer.path={data / 'prepared' / 'easy_vqa_pretrain' / 'tokenizer'}"]],
         data / "prepared" / ".done", [data / "prepared" / "easy_vqa_pretrain", data / "prepared" / "easy_vqa"]),
        ("pretraining", [[str(BIN / "lxmert-pretrain"), "experiment=easy_vqa_pretrain", f"paths.root_dir={root}",
                          "trainer.resume=auto"]], runs / "pretrain" / "easy_vqa_pretrain" / ".done",
         [runs / "pretrain" / "easy_vqa_pretrain"]),
    ]


def vqa_stage(root: Path) -> Stage:
    run = root / "runs" / "finetune_vqa" / "easy_vqa_vqa"
    return ("VQA fine-tuning + test", [[str(BIN / "lxmert-finetune"), "experiment=easy_vqa_vqa", f"paths.root_dir={root}",
                                        "trainer.resume=auto"]], run / ".done", [run])


def run_stage(name: str, commands: list[list[str]], marker: Path, force: bool, outputs: Sequence[Path] = ()) -> dict:
    if marker.exists() and not force:
        prev = json.loads(marker.read_text())
        print(f"[demo] {name}: complete, skipped (took {prev['seconds']:.1f}s; --force to redo)", flush=True)
        return {"name": name, "seconds": prev["seconds"], "status": "skipped (done earlier)"}
    if force:
        for out in outputs:
            if out.exists():
                print(f"[demo]   --force: removing {out}", flush=True)
                shutil.rmtree(out)
    print(f"[demo] {name} ...", flush=True)
    t0 = time.time()
    for cmd in commands:
        print("[demo]   $ " + " ".join(cmd), flush=True)
        rc = subprocess.call(cmd)
        if rc != 0:
            sys.exit(f"[demo] {name} failed (exit {rc}): {' '.join(cmd)}")
    seconds = time.time() - t0
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"seconds": seconds}))
    print(f"[demo] {name}: {seconds:.1f}s", flush=True)
    return {"name": name, "seconds": seconds, "status": "ran"}


def report(root: Path, done: list[dict]) -> Path:
    from lxmert_repro.evaluation.report import attention_examples, plot_curves, write_summary

    t0 = time.time()
    out = root / "runs" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    pre, ft = root / "runs" / "pretrain" / "easy_vqa_pretrain", root / "runs" / "finetune_vqa" / "easy_vqa_vqa"
    curves = [c for c in (plot_curves(pre, out / "pretrain_losses.png", "pretraining losses"),
                          plot_curves(ft, out / "finetune_losses.png", "VQA fine-tuning loss")) if c]
    metrics = json.loads((ft / "final_metrics.json").read_text())
    questions = json.loads((easy_vqa_root() / "test" / "questions.json").read_text())
    picks = [questions[i] for i in (0, 7, 21, 42)]
    examples = attention_examples(ft / "model_best", root / "data" / "easy_vqa" / "features", [
        {"image_id": f"test_{q[2]}", "image_path": str(easy_vqa_image_dir("test") / f"{q[2]}.png"),
         "question": q[0], "answer": q[1]} for q in picks], out)
    done = done + [{"name": "report", "seconds": time.time() - t0, "status": "ran"}]
    path = write_summary(out, done, metrics, curves, examples)
    for s in done:
        print(f"[demo] {s['name']:<40} {s['seconds']:8.1f}s  {s['status']}")
    print(f"[demo] total {sum(s['seconds'] for s in done):.1f}s")
    for k, v in sorted(metrics.items()):
        if k.startswith("test/"):
            print(f"[demo] {k} = {v}")
    print(f"[demo] report: {path}")
    return path


def offline_env() -> None:
    """Nothing in the shipped run reaches a hub: trackers stay offline, hub lookups fail fast."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="redo every stage even if its outputs are complete")
    ap.add_argument("--root", default=".", help="where data/ and runs/ live")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    offline_env()
    done = [run_stage(name, cmds, marker, args.force, outputs) for name, cmds, marker, outputs in stages(root)]
    report(root, done)


if __name__ == "__main__":
    main()
