"""Sweeps through the real CLI: a basic ``-m`` multirun and the Optuna sweeper, each job in its own
run dir with its metrics, the objective being the metric the run returns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_helpers import build_easy_vqa_data, data_overrides

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> dict[str, str]:
    return build_easy_vqa_data(tmp_path_factory.mktemp("sweep_data"), n_train_images=20, n_test_images=8)


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    r = subprocess.run(
        [sys.executable, "-m", "lxmert_repro.cli.finetune", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def _common(easy: dict[str, str]) -> list[str]:
    return data_overrides(easy, "vqa") + [
        "model=lxmert_tiny",
        "trainer.cpu=true",
        "trainer.progress_bar=false",
        "trainer.max_steps=3",
        "trainer.batch_size=16",
        "data.limit=64",
        "data.vqa.test=null",
        "logger=jsonl",
    ]


def test_basic_multirun_two_values_two_run_dirs(easy, tmp_path):
    sweep = tmp_path / "sweep"
    _run(["-m", "optim.lr=1e-3,1e-4", f"hydra.sweep.dir={sweep}", *_common(easy)])
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert [p.name for p in jobs] == ["0", "1"]
    lrs = []
    for job in jobs:
        final = json.loads((job / "final_metrics.json").read_text())
        assert final["global_step"] == 3 and "best/val/accuracy" in final
        assert (job / "metrics.jsonl").is_file() and (job / "model_best").is_dir()
        lrs.append(yaml.safe_load((job / "config.yaml").read_text())["optim"]["lr"])  # the composed config
    assert lrs == [1e-3, 1e-4]

    # the same sweep again: refused before any job's directory is written into
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "lxmert_repro.cli.finetune",
            "-m",
            "optim.lr=1e-3,1e-4",
            f"hydra.sweep.dir={sweep}",
            *_common(easy),
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert (
        f"lxmert-finetune: error: sweep {sweep}: job directory {sweep / '0'} already holds an earlier run" in r.stderr
    )
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before


def test_optuna_sweeper_two_trials(easy, tmp_path):
    sweep = tmp_path / "optuna"
    _run(
        [
            "-m",
            "hparams_search=vqa_optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.sampler.n_startup_trials=2",
            f"hydra.sweep.dir={sweep}",
            *_common(easy),
        ]
    )
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and p.name.isdigit())
    assert len(jobs) == 2
    values = [json.loads((j / "final_metrics.json").read_text())["best/val/accuracy"] for j in jobs]
    result = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert result["best_value"] == pytest.approx(max(values))  # the objective is the returned metric
    assert set(result["best_params"]) == {"optim.lr", "optim.warmup_ratio"}  # batch size fixed by the command line
