"""Command-line entry points: thin Hydra apps over the library.

The apps' configs ship inside the package (``lxmert_repro/configs``, package data) and are found through
Hydra's ``pkg://`` search path, so a wheel install works outside a checkout; users add their own config
folders with ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]``. Under a
multi-process launch (torchrun / accelerate launch) only rank 0 keeps Hydra's run directory and
logs; the other ranks get a private scratch dir and the training code adopts rank 0's run dir.

``run_app`` runs an app so that expected errors (bad input or config, a missing file, a used run dir,
a non-finite run) print one line ``<prog>: error: ...`` and exit 2; anything else is a bug and keeps
its traceback, as does every error under ``--debug`` or ``HYDRA_FULL_ERROR=1``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_PATH = "pkg://lxmert_repro.configs"  # what every @hydra.main gets
CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"  # the same folder on disk (tests, compose API)
PACKAGE_DIR = Path(__file__).resolve().parents[1]
EXIT_USAGE = 2  # as argparse: the command was given something it cannot use


@dataclass
class PathsConfig:
    """Schema of the ``paths`` group (configs/paths/)."""

    root_dir: str = "."
    data_dir: str = "data"
    log_dir: str = "runs"
    output_dir: str = ""  # the run directory (Hydra's)


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


def _raised_in_package(exc: BaseException) -> bool:
    """Whether the innermost frame of ``exc``'s traceback is this package's code (a deliberate raise)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return Path(tb.tb_frame.f_code.co_filename).resolve().is_relative_to(PACKAGE_DIR)


def is_expected_error(exc: BaseException) -> bool:
    """Errors that describe bad input rather than a bug: named ones, config errors, a missing or existing
    file, and the ValueError / TypeError / KeyError / RuntimeError / OSError this package raises itself."""
    from hydra.errors import CompactHydraException, InstantiationException
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue, ValidationError

    from lxmert_repro.modeling.convert import CheckpointError
    from lxmert_repro.training.checkpointing import NonFiniteStateError
    from lxmert_repro.training.loop import NonFiniteLossError

    if isinstance(exc, InstantiationException):  # a target refused its config values: judge the cause
        return exc.__cause__ is not None and is_expected_error(exc.__cause__)
    named = (
        CheckpointError,
        NonFiniteStateError,
        NonFiniteLossError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        CompactHydraException,
        MissingMandatoryValue,
        ValidationError,
        InterpolationResolutionError,
    )
    if isinstance(exc, named):
        return True
    return isinstance(exc, (ValueError, TypeError, KeyError, RuntimeError, OSError)) and _raised_in_package(exc)


def error_line(exc: BaseException) -> str:
    """The error's message on one line (multi-line Hydra/OmegaConf messages joined)."""
    from hydra.errors import CompactHydraException, InstantiationException
    from omegaconf.errors import OmegaConfBaseException

    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args and isinstance(exc.args[0], str) else str(exc)
    cause = exc.__cause__
    lines = []
    for line in msg.splitlines():
        if line.startswith("Config search path"):  # Hydra's list of providers: noise for a user
            break
        if line.strip():
            lines.append(line.strip())
    if (
        isinstance(exc, CompactHydraException)
        and not isinstance(exc, InstantiationException)
        and isinstance(cause, OmegaConfBaseException)
    ):
        lines.append(str(cause).splitlines()[0])  # as Hydra prints them: the override's problem is in the cause
    return " ".join(lines) or type(exc).__name__


def run_app(app: Callable[[], Any], prog: str) -> None:
    """Run a Hydra app (``hydra.main``-decorated, no arguments) as the ``prog`` command."""
    debug = "--debug" in sys.argv[1:]
    if debug:
        sys.argv.remove("--debug")
    full = debug or os.environ.get("HYDRA_FULL_ERROR") == "1"
    prepare_argv()
    saved = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra re-raises instead of printing; the decision is made here
    from lxmert_repro.cli.run_guard import CallbackError

    try:
        app()
    except (Exception, CallbackError) as caught:
        exc = caught.error if isinstance(caught, CallbackError) else caught
        if full or not is_expected_error(exc):
            raise exc
        print(f"{prog}: error: {error_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    finally:
        if saved is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = saved
