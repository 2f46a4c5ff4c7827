"""A regular (non-editable) install works outside the checkout: a wheel built from the sources carries the
apps' configs, its console scripts compose them from another directory, and a user's own config folder
(``--config-dir`` / ``hydra.searchpath``) still adds to them."""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_helpers import build_easy_vqa_data, data_overrides

from lxmert_repro.cli import CONFIG_DIR as PACKAGE_CONFIG_DIR

REPO = Path(__file__).resolve().parents[1]
# Not sources: what a build, a run or a venv leaves at the checkout's top level.
NOT_SOURCES = {
    ".git",
    ".venv",
    "build",
    "runs",
    "data",
    "outputs",
    "multirun",
    "wandb",
    ".pytest_cache",
    ".bench",
    ".whl",
    ".gl",
}
USER_EXPERIMENT = """# @package _global_
defaults:
  - override /model: lxmert_tiny
trainer:
  cpu: true
  progress_bar: false
  max_steps: 2
  batch_size: 16
"""


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The package installed from a wheel (no deps: they come from this venv) into a target dir."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    # Build from a copy of the sources: the checkout gets no build/ or egg-info.
    shutil.copytree(
        REPO,
        src,
        ignore=lambda d, names: [
            n for n in names if (Path(d) == REPO and n in NOT_SOURCES) or n == "__pycache__" or n.endswith(".egg-info")
        ],
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp / "dist"), str(src)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("lxmert_repro-*.whl")
    target = tmp / "site"
    subprocess.run(
        [*pip, "install", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return target


def _run(target: Path, cwd: Path, script: str, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), OMP_NUM_THREADS="1", WANDB_MODE="offline", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, str(target / "bin" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )


def _yamls(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.yaml"))


def test_wheel_imports_the_installed_copy_with_all_its_configs(installed, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = "import lxmert_repro.cli as c; print(c.__file__); print(c.CONFIG_DIR)"
    r = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=dict(env, PYTHONPATH=str(installed)),
        capture_output=True,
        text=True,
        check=True,
    )
    where, config_dir = r.stdout.splitlines()
    assert Path(where).is_relative_to(installed) and Path(config_dir).is_relative_to(installed)
    shipped = _yamls(Path(config_dir))
    assert shipped == _yamls(PACKAGE_CONFIG_DIR)  # every config of the sources, sub-folders included
    assert "pretrain.yaml" in shipped and "model/lxmert_base.yaml" in shipped


def _console_scripts() -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return [
        line.split("=")[0].strip()
        for line in cfg["options.entry_points"]["console_scripts"].splitlines()
        if line.strip()
    ]


ARGPARSE_SCRIPTS = {"lxmert-convert", "lxmert-features"}  # the others are Hydra apps
# A top-level key of each Hydra app's own config file (so the app composed its config, not some other one).
OWN_KEY = {
    "lxmert-train-detector": "epochs",
    "lxmert-extract": "feat_dtype",
    "lxmert-prepare": "missing_images",
    "lxmert-pretrain": "pretrain",
    "lxmert-finetune": "finetune",
    "lxmert-evaluate": "predictions",
    "lxmert-predict": "questions",
}


@pytest.mark.parametrize("script", _console_scripts())
def test_every_installed_console_script_starts_outside_the_checkout(installed, tmp_path, script):
    """Hydra apps compose their config (``--cfg job``); the argparse ones print their usage."""
    r = _run(installed, tmp_path, script, *(["--help"] if script in ARGPARSE_SCRIPTS else ["--cfg", "job"]))
    assert r.returncode == 0, r.stderr[-3000:]
    if script in ARGPARSE_SCRIPTS:
        assert r.stdout.startswith(f"usage: {script}")
    else:
        assert OWN_KEY[script] in yaml.safe_load(r.stdout)


def test_installed_pretrain_composes_its_config_outside_the_checkout(installed, tmp_path):
    r = _run(installed, tmp_path, "lxmert-pretrain", "--cfg", "job")
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load(r.stdout)
    assert cfg["task_name"] == "pretrain" and cfg["model"]["hidden_size"] == 768 and cfg["optim"]["lr"] == 1e-4


def test_user_config_folder_adds_to_the_shipped_configs(installed, tmp_path):
    user = tmp_path / "my_configs"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "my_tiny.yaml").write_text(USER_EXPERIMENT)
    r = _run(
        installed,
        tmp_path,
        "lxmert-pretrain",
        f"hydra.searchpath=[file://{user}]",
        "experiment=my_tiny",
        "--cfg",
        "job",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    cfg = yaml.safe_load(r.stdout)
    assert cfg["model"]["hidden_size"] == 32 and cfg["trainer"]["max_steps"] == 2


def test_installed_finetune_trains_a_tiny_model_from_another_directory(installed, tmp_path):
    easy = build_easy_vqa_data(tmp_path / "data", n_train_images=12, n_test_images=4)
    user = tmp_path / "my_configs"
    (user / "experiment").mkdir(parents=True)
    (user / "experiment" / "my_tiny.yaml").write_text(USER_EXPERIMENT)
    run = tmp_path / "run"
    r = _run(
        installed,
        tmp_path,
        "lxmert-finetune",
        "--config-dir",
        str(user),
        "experiment=my_tiny",
        *data_overrides(easy, "vqa"),
        "data.vqa.test=null",
        "logger=jsonl",
        f"hydra.run.dir={run}",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["global_step"] == 2 and "best/val/accuracy" in final
    assert (run / "model_best").is_dir()
