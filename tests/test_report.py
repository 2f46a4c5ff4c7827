"""The demo's report: accuracy overall and per answer type, stage times, written atomically."""

from __future__ import annotations

import json

from lxmert_repro.evaluation.report import write_summary


def test_summary_lists_accuracy_per_answer_type_and_stage_times(tmp_path):
    metrics = {
        "test/accuracy": 97.5,
        "test/accuracy_yes_no": 96.25,
        "test/accuracy_other": 100.0,
        "pretrain/samples_per_s": 900.0,
    }
    stages = [
        {"name": "pretraining", "seconds": 100.0, "status": "ran"},
        {"name": "VQA fine-tuning + test", "seconds": 50.5, "status": "skipped (done earlier)"},
    ]
    md = write_summary(tmp_path, stages, metrics, [], []).read_text()
    assert "| **all** | **97.50** |" in md
    assert "| yes/no | 96.25 |" in md and "| other | 100.00 |" in md
    assert "| pretraining | 100.0 | ran |" in md and "| **total** | 150.5 | |" in md
    assert "pretrain/samples_per_s: 900.0" in md
    assert json.loads((tmp_path / "report.json").read_text())["metrics"] == metrics


def test_demo_report_draws_only_the_runs_that_exist(tmp_path):
    """`make demo` without --task has no GQA/NLVR2 runs: the report still comes out, with the curves it can draw."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("demo", Path(__file__).parents[1] / "scripts" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    pre = tmp_path / "runs" / "pretrain" / "easy_vqa_pretrain"
    pre.mkdir(parents=True)
    lines = [json.dumps({"step": s, "train/loss": 2.0 / s}) for s in (1, 2, 3)]
    (pre / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    path = demo.report(tmp_path, [{"name": "pretraining", "seconds": 1.0, "status": "ran"}])
    assert path.is_file()
    assert (tmp_path / "runs" / "demo" / "pretrain_losses.png").is_file()
    assert not (tmp_path / "runs" / "demo" / "gqa_losses.png").exists()
