"""Metrics logging: an always-written ``metrics.jsonl`` plus Accelerate's trackers (TensorBoard, wandb).

wandb runs offline unless the user sets ``logger.wandb.mode=online`` (or WANDB_MODE): nothing leaves
the machine by default. Only the main process writes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lxmert_repro.config_schema import check

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TRACKERS = ("tensorboard", "wandb")


@dataclass
class LoggerConfig:
    """Schema of the ``logger`` group (configs/logger/)."""

    project: str = "lxmert-repro"
    trackers: list[str] = field(default_factory=list)
    wandb: dict[str, Any] = field(default_factory=dict)  # wandb.init arguments (mode: null = offline)

    def __post_init__(self) -> None:
        for t in self.trackers:
            check(t in TRACKERS, "logger.trackers", t, f"a tracker name ({' | '.join(TRACKERS)})")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config → flat ``{"a/b": v}`` with scalar values (trackers want flat hyperparameters)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v if v is not None else "None"
        else:
            out[key] = str(v)
    return out


def tracker_names(logger_cfg: Mapping[str, Any] | None) -> list[str]:
    """Accelerate ``log_with`` names from ``logger.trackers`` (jsonl is not a tracker: always on)."""
    if not logger_cfg:
        return []
    names = [str(t) for t in (logger_cfg.get("trackers") or [])]
    allowed = set(TRACKERS)
    for n in names:
        if n not in allowed:
            raise ValueError(f"logger.trackers: unknown tracker {n!r}; expected a subset of {sorted(allowed)}")
    return names


def tracker_init_kwargs(logger_cfg: Mapping[str, Any] | None, run_dir: Path, run_name: str) -> dict[str, Any]:
    """Per-tracker init kwargs; wandb offline unless configured, its files inside the run dir."""
    kwargs: dict[str, Any] = {}
    if not logger_cfg:
        return kwargs
    if "wandb" in (logger_cfg.get("trackers") or []):
        wcfg = dict(logger_cfg.get("wandb") or {})
        mode = wcfg.pop("mode", None) or os.environ.get("WANDB_MODE") or "offline"
        kwargs["wandb"] = {"mode": mode, "dir": str(run_dir), "name": run_name, **wcfg}
    return kwargs


class MetricsLogger:
    """Appends one JSON object per ``log`` call to ``<run>/metrics.jsonl`` and forwards to trackers."""

    def __init__(self, accelerator: Any, run_dir: str | os.PathLike) -> None:
        self.accelerator = accelerator
        self.path = Path(run_dir) / METRICS_FILE
        self._t0 = time.time()

    def log(self, values: Mapping[str, Any], step: int) -> None:
        if not self.accelerator.is_main_process:
            return
        clean = {
            k: (float(v) if hasattr(v, "__float__") and not isinstance(v, (int, str)) else v) for k, v in values.items()
        }
        record = {"step": int(step), "time": round(time.time() - self._t0, 3), **clean}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(record, allow_nan=True) + "\n")
        numeric = {k: v for k, v in clean.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        numeric = {k: v for k, v in numeric.items() if math.isfinite(v)}
        if numeric and self.accelerator.trackers:
            self.accelerator.log(numeric, step=int(step))


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a run's ``metrics.jsonl`` (for tests, reports and sweeps)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no metrics file (did the run start?)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
