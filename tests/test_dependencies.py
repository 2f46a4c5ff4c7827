"""The declared dependencies: each is used, and constraints.txt pins each to a version inside setup.cfg's range
(the lock ``make install`` installs is the one the ranges allow)."""

from __future__ import annotations

import ast
import configparser
import importlib.metadata
import re
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[1]
# Used without an import of their own: chosen by name in a config (lxmert_repro/configs/...).
USED_THROUGH_CONFIGS = {
    "hydra-optuna-sweeper": "hparams_search/*_optuna.yaml (hydra/sweeper: optuna)",
    "wandb": "logger/wandb.yaml (an Accelerate tracker)",
    "tensorboard": "logger/tensorboard.yaml (an Accelerate tracker)",
    "ruff": "make lint (a command-line tool, run by .ci/run)",
}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    lines = cfg["options"]["install_requires"].splitlines() + cfg["options.extras_require"]["dev"].splitlines()
    return [Requirement(line) for line in lines if line.strip() and not line.strip().startswith("#")]


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split("==")
            pins[_norm(name)] = version.strip()
    return pins


def _imported_distributions() -> set[str]:
    tops: set[str] = set()
    for folder in ("lxmert_repro", "scripts", "tests", "benchmarks"):
        for f in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    tops |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    tops.add(node.module.split(".")[0])
    dists = importlib.metadata.packages_distributions()
    return {_norm(d) for top in tops for d in dists.get(top, [])}


def test_every_declared_dependency_is_used():
    used = _imported_distributions() | set(USED_THROUGH_CONFIGS)
    unused = [r.name for r in _declared() if _norm(r.name) not in used]
    assert unused == [], f"declared in setup.cfg but imported nowhere: {unused}"


def test_lock_pins_every_declared_dependency_inside_its_range():
    pins = _locked()
    for req in _declared():
        assert _norm(req.name) in pins, f"{req.name} missing from constraints.txt"
        assert req.specifier.contains(pins[_norm(req.name)], prereleases=True), (req, pins[_norm(req.name)])
    assert "lxmert-repro" not in pins  # the project itself is not a constraint


def test_transformers_has_an_upper_bound():
    (req,) = [r for r in _declared() if r.name == "transformers"]
    assert any(s.operator == "<" for s in req.specifier), req
