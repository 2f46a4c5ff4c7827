#!/usr/bin/env python
"""The default end-to-end run on easy-VQA: raw pixels -> detector -> features -> pretraining -> VQA -> report.

    python scripts/demo.py [--force] [--root .]      (what `make demo` runs)
    python scripts/demo.py --task gqa                (make demo-gqa: easy-VQA in GQA's format, official GQA figures)
    python scripts/demo.py --task nlvr2              (make demo-nlvr2: easy-VQA image pairs, + a text-only baseline;
                                                      both start from the VQA run's encoder, which runs first)

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
from collections.abc import Sequence
from pathlib import Path

from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir, easy_vqa_root

BIN = Path(sys.executable).parent


Stage = tuple[str, list[list[str]], Path, list[Path]]


TASKS = ("vqa", "gqa", "nlvr2")


def stages(root: Path, task: str = "vqa") -> list[Stage]:
    """Every stage of the demo: the pretraining pipeline, then the task's data, fine-tuning and test (NLVR2 starts
    from the VQA model's encoder: experiment=easy_vqa_nlvr2 says why)."""
    task_stages = {
        "vqa": lambda: [vqa_stage(root)],
        "gqa": lambda: gqa_stages(root),
        "nlvr2": lambda: [vqa_stage(root), *nlvr2_stages(root)],
    }
    return pretraining_stages(root) + task_stages[task]()


def pretraining_stages(root: Path) -> list[Stage]:
    """(name, commands, marker, outputs) from pixels to the pretrained model (the ablation starts from these).

    The marker is written after every command of the stage succeeded; the outputs are what --force deletes first
    (otherwise the stage's own resume would find its old results)."""
    data, runs = root / "data", root / "runs"
    det, feats = data / "easy_vqa" / "detector", data / "easy_vqa" / "features"
    py = [sys.executable]
    return [
        (
            "coco annotations",
            [py + ["scripts/easy_vqa_to_coco.py", "--out-dir", str(data / "easy_vqa_coco")]],
            data / "easy_vqa_coco" / ".done",
            [data / "easy_vqa_coco"],
        ),
        (
            "detector training",
            [
                [
                    str(BIN / "lxmert-train-detector"),
                    f"output_dir={det}",
                    f"data.train_json={data / 'easy_vqa_coco' / 'train.json'}",
                    f"data.val_json={data / 'easy_vqa_coco' / 'test.json'}",
                ]
            ],
            det / ".done",
            [det],
        ),
        (
            "feature extraction",
            [
                [
                    str(BIN / "lxmert-extract"),
                    f"input={easy_vqa_image_dir(split)}",
                    f"output={feats}",
                    f"checkpoint={det / 'detector'}",
                    f"image_id_prefix={split}_",
                ]
                for split in ("train", "test")
            ],
            feats / ".done",
            [feats],
        ),
        # The VQA split reuses the pretraining tokenizer: fine-tuning must see the pretrained model's vocabulary.
        (
            "prepare (tokenizer, answers, Arrow)",
            [
                [str(BIN / "lxmert-prepare"), "data=easy_vqa_pretrain", f"features={feats}", f"paths.root_dir={root}"],
                [
                    str(BIN / "lxmert-prepare"),
                    "data=easy_vqa",
                    f"features={feats}",
                    f"paths.root_dir={root}",
                    "tokenizer=bert_base_uncased",
                    f"tokenizer.path={data / 'prepared' / 'easy_vqa_pretrain' / 'tokenizer'}",
                ],
            ],
            data / "prepared" / ".done",
            [data / "prepared" / "easy_vqa_pretrain", data / "prepared" / "easy_vqa"],
        ),
        (
            "pretraining",
            [
                [
                    str(BIN / "lxmert-pretrain"),
                    "experiment=easy_vqa_pretrain",
                    f"paths.root_dir={root}",
                    "trainer.resume=auto",
                ]
            ],
            runs / "pretrain" / "easy_vqa_pretrain" / ".done",
            [runs / "pretrain" / "easy_vqa_pretrain"],
        ),
    ]


def vqa_stage(root: Path) -> Stage:
    run = root / "runs" / "finetune_vqa" / "easy_vqa_vqa"
    return (
        "VQA fine-tuning + test",
        [[str(BIN / "lxmert-finetune"), "experiment=easy_vqa_vqa", f"paths.root_dir={root}", "trainer.resume=auto"]],
        run / ".done",
        [run],
    )


def _task_stages(
    root: Path, task: str, script: str, finetunes: list[tuple[str, str, list[str]]], prepare: Sequence[str] = ()
) -> list[Stage]:
    """Files in the task's format from easy-VQA, prepared with the pretraining tokenizer (and ``prepare``'s extra
    overrides), then each fine-tuning run (name, run name, extra overrides) of ``experiment=easy_vqa_<task>``."""
    data, runs, py = root / "data", root / "runs", [sys.executable]
    files, prepared = data / f"easy_vqa_{task}", data / "prepared" / f"easy_vqa_{task}"
    out = [
        (f"{task.upper()}-format files", [py + [script, "--out-dir", str(files)]], files / ".done", [files]),
        (
            f"prepare {task.upper()}",
            [
                [
                    str(BIN / "lxmert-prepare"),
                    f"data=easy_vqa_{task}",
                    f"features={data / 'easy_vqa' / 'features'}",
                    f"paths.root_dir={root}",
                    "tokenizer=bert_base_uncased",
                    f"tokenizer.path={data / 'prepared' / 'easy_vqa_pretrain' / 'tokenizer'}",
                    *prepare,
                ]
            ],
            prepared / ".done",
            [prepared],
        ),
    ]
    for name, run_name, extra in finetunes:
        run = runs / f"finetune_{task}" / run_name
        out.append(
            (
                name,
                [
                    [
                        str(BIN / "lxmert-finetune"),
                        f"experiment=easy_vqa_{task}",
                        f"paths.root_dir={root}",
                        f"run_name={run_name}",
                        "trainer.resume=auto",
                        *extra,
                    ]
                ],
                run / ".done",
                [run],
            )
        )
    return out


def gqa_stages(root: Path) -> list[Stage]:
    return _task_stages(root, "gqa", "scripts/easy_vqa_to_gqa.py", [("GQA fine-tuning + test", "easy_vqa_gqa", [])])


# The pair task's statements are up to 28 tokens with the demo's WordPiece (it never saw "left", "right", "both"):
# LXMERT's 20 would cut the right image's colour off (experiment=easy_vqa_nlvr2 reads them with the same 32).
NLVR2_PREPARE = ["tokenizer.max_length=32"]


def nlvr2_stages(root: Path, with_finetunes: bool = True) -> list[Stage]:
    finetunes = [
        ("NLVR2 fine-tuning + test", "easy_vqa_nlvr2", []),
        ("NLVR2 text-only baseline", "easy_vqa_nlvr2_text_only", ["task.blind=true"]),
    ]
    return _task_stages(
        root, "nlvr2", "scripts/easy_vqa_to_nlvr2.py", finetunes if with_finetunes else [], NLVR2_PREPARE
    )


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


def _metrics(run: Path) -> dict | None:
    f = run / "final_metrics.json"
    return json.loads(f.read_text()) if f.is_file() else None


def report(root: Path, done: list[dict]) -> Path:
    """runs/demo/report.md with every task whose demo run is complete (VQA; GQA, NLVR2 after --task)."""
    from lxmert_repro.evaluation.report import (
        attention_examples,
        gqa_section,
        nlvr2_section,
        plot_curves,
        write_summary,
    )
    from lxmert_repro.training.tracking import METRICS_FILE

    t0 = time.time()
    out = root / "runs" / "demo"
    out.mkdir(parents=True, exist_ok=True)
    runs = root / "runs"
    pre, ft = runs / "pretrain" / "easy_vqa_pretrain", runs / "finetune_vqa" / "easy_vqa_vqa"
    gqa, nlvr2 = runs / "finetune_gqa" / "easy_vqa_gqa", runs / "finetune_nlvr2" / "easy_vqa_nlvr2"
    plots = (
        (pre, "pretrain_losses.png", "pretraining losses"),
        (ft, "finetune_losses.png", "VQA fine-tuning loss"),
        (gqa, "gqa_losses.png", "GQA fine-tuning loss"),  # GQA and NLVR2: only after --task gqa / nlvr2
        (nlvr2, "nlvr2_losses.png", "NLVR2 fine-tuning loss"),
    )
    curves = [
        c for run, png, title in plots if (run / METRICS_FILE).is_file() and (c := plot_curves(run, out / png, title))
    ]
    metrics = _metrics(ft) or {}
    examples = []
    if metrics:
        questions = json.loads((easy_vqa_root() / "test" / "questions.json").read_text())
        picks = [questions[i] for i in (0, 7, 21, 42)]
        examples = attention_examples(
            ft / "model_best",
            root / "data" / "easy_vqa" / "features",
            [
                {
                    "image_id": f"test_{q[2]}",
                    "image_path": str(easy_vqa_image_dir("test") / f"{q[2]}.png"),
                    "question": q[0],
                    "answer": q[1],
                }
                for q in picks
            ],
            out,
        )
    sections: list[str] = []
    tasks = {"vqa": metrics}
    if (m := _metrics(gqa)) is not None:
        sections += gqa_section(m)
        tasks["gqa"] = m
    if (m := _metrics(nlvr2)) is not None:
        text_only = _metrics(runs / "finetune_nlvr2" / "easy_vqa_nlvr2_text_only")
        sections += nlvr2_section(m, text_only)
        tasks["nlvr2"], tasks["nlvr2_text_only"] = m, text_only or {}
    done = done + [{"name": "report", "seconds": time.time() - t0, "status": "ran"}]
    path = write_summary(out, done, metrics, curves, examples, sections)
    for s in done:
        print(f"[demo] {s['name']:<40} {s['seconds']:8.1f}s  {s['status']}")
    print(f"[demo] total {sum(s['seconds'] for s in done):.1f}s")
    for task, m in tasks.items():
        for k, v in sorted(m.items()):
            if k.startswith("test/") and not isinstance(v, dict):
                print(f"[demo] {task} {k} = {v}")
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
    ap.add_argument("--task", choices=TASKS, default="vqa", help="the downstream task fine-tuned after pretraining")
    args = ap.parse_args()
    root = Path(args.root).resolve()
    offline_env()
    done = [
        run_stage(name, cmds, marker, args.force, outputs) for name, cmds, marker, outputs in stages(root, args.task)
    ]
    report(root, done)


if __name__ == "__main__":
    main()
