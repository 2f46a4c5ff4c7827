"""Command-line entry points: thin Hydra apps over the library.

The apps' configs ship inside the package (``lxmert_repro/configs``, package data) and are found through
Hydra's ``pkg://`` search path, so a wheel install works outside a checkout; users add their own config
folders with ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``. Under a
multi-process launch (torchrun / accelerate launch) only rank 0 keeps Hydra's run directory and
logs; the other ranks get a private scratch dir and the training code adopts rank 0's run dir.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

CONFIG_PATH = "pkg://lxmert_repro.configs"  # what every @hydra.main gets
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the same folder on disk (tests, compose API)


def launch_rank() -> int:
    """Global rank from the launcher's environment (0 when not launched distributed)."""
    for var in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        v = os.environ.get(var)
        if v not in (None, ""):
            return int(v)
    return 0


def non_main_rank_overrides(rank: int | None = None) -> list[str]:
    """Hydra overrides for ranks > 0: no .hydra dir, no log file, a scratch run dir outside the run tree."""
    rank = launch_rank() if rank is None else rank
    if rank == 0:
        return []
    scratch = Path(tempfile.gettempdir()) / f"lxmert-rank{rank}-{os.getpid()}"
    return [
        f"hydra.run.dir={scratch}",
        "hydra.output_subdir=null",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]


def prepare_argv() -> None:
    """Append the non-main-rank overrides to ``sys.argv`` before ``hydra.main`` parses it."""
    sys.argv.extend(non_main_rank_overrides())


def objective(cfg, metrics: dict) -> float | None:
    """The value a sweeper optimises: ``metrics[cfg.optimized_metric]`` (None when not sweeping)."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise KeyError(f"optimized_metric={name!r} is not among the run's metrics {sorted(metrics)}")
    return float(metrics[name])
