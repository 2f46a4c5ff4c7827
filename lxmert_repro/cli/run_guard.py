"""A Hydra callback that refuses to start a run in a run directory an earlier run already used.

Hydra writes ``.hydra/`` (the composed config, overrides) into the run directory before the app starts,
so a refusal from inside the app comes too late: the finished run's record would already say the
refused command's values. ``on_run_start`` / ``on_multirun_start`` run before anything is written.
A directory is used when it holds anything besides Hydra's own files (``.hydra/``, the job log), i.e.
an app wrote outputs there; reusing it is allowed only when the run resumes (``trainer.resume`` or
``resume`` set), which is how a killed or finished run is continued.

Hydra turns an ``Exception`` raised in a callback into a warning and goes on, so the refusal travels as
``CallbackError`` (a ``BaseException``), which ``lxmert_repro.cli.run_app`` reports as the error it carries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

HYDRA_OWN = (".hydra",)  # and *.log: what Hydra itself writes before the app runs


class CallbackError(BaseException):
    """An error from a Hydra callback that must stop the run (``error`` is the real one)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def run_outputs(run_dir: Path) -> list[str]:
    """Names of what an app left in ``run_dir`` (empty when it is new or holds only Hydra's files)."""
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir() if p.name not in HYDRA_OWN and p.suffix != ".log")


def resumes(config: DictConfig) -> bool:
    """Whether the command continues an earlier run (and so may reuse its directory)."""
    for key in ("trainer.resume", "resume"):
        value = OmegaConf.select(config, key, default=None)
        if value not in (None, "", False, "none", "null"):
            return True
    return False


def refuse_used_run_dir(run_dir: Path, config: DictConfig, what: str = "run directory") -> None:
    if resumes(config):
        return
    used = run_outputs(run_dir)
    if used:
        shown = ", ".join(used[:4]) + (", ..." if len(used) > 4 else "")
        raise FileExistsError(
            f"{what} {run_dir} already holds an earlier run ({shown}); nothing was written. Continue it with "
            f"trainer.resume=auto (lxmert-train-detector: resume=auto), or start a new run with another run_name "
            f"(or hydra.run.dir / output_dir)"
        )


class RunDirGuard(Callback):
    """Configured in the apps' ``hydra.callbacks``; see the module docstring."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            refuse_used_run_dir(Path(str(config.hydra.run.dir)), config)
        except FileExistsError as e:
            raise CallbackError(e) from e

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep = Path(str(config.hydra.sweep.dir))
        if not sweep.is_dir():
            return
        try:
            for job in sorted(p for p in sweep.iterdir() if p.is_dir() and p.name not in HYDRA_OWN):
                refuse_used_run_dir(job, config, what=f"sweep {sweep}: job directory")
        except FileExistsError as e:
            raise CallbackError(e) from e
