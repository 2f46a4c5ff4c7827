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
