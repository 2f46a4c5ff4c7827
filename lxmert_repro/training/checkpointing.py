"""Training checkpoints: full state for resume, written atomically, the last k kept.

A checkpoint directory ``<run>/checkpoints/step_000000123/`` holds what ``Accelerator.save_state``
writes (model, optimizer, registered scheduler, grad scaler, per-process RNG states) plus
``trainer_state.json`` (step, epoch, batches consumed in the epoch, best metric, the composed
config and the git commit). It is first written under ``.tmp-step_...`` and renamed when complete,
so a run killed while saving leaves no half checkpoint behind, and ``resume=auto`` only ever sees
complete ones. Loading pretrained weights for a new run is a different thing (the model helper's
``load_model``); resume restores everything.

Only finite state is written: ``save`` checks every parameter and optimizer-state tensor first and raises
``NonFiniteStateError`` instead. Finite weights can still be useless (lr 1e10 gives finite 1e10 weights whose
next loss is NaN), so a checkpoint counts as good once the loss computed from its weights was finite
(``confirm``); pruning keeps the newest good one besides the last k, and when the loss turns non-finite the
checkpoints from that step on are renamed ``nonfinite-step_*`` (kept for inspection, never resumed from).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from lxmert_repro.io_utils import atomic_write_json, replace_dir

TRAINER_STATE_FILE = "trainer_state.json"
CHECKPOINTS_DIR = "checkpoints"
QUARANTINE_PREFIX = "nonfinite-"
_NAME_RE = re.compile(r"^step_(\d+)$")


class NonFiniteStateError(RuntimeError):
    """Parameters or optimizer state hold NaN/inf: the checkpoint was not written."""


def nonfinite_tensors(named: Iterable[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding NaN/inf. One fused max-abs over all of them (no overflow, unlike the
    2-norm of large finite values) and one host read; names are only looked up when something is wrong."""
    names, tensors = [], []
    for name, t in named:
        if t.is_floating_point() and t.numel():
            names.append(name)
            tensors.append(t.detach())
    if not tensors:
        return []
    finite = torch.isfinite(torch.stack([m.float() for m in torch._foreach_norm(tensors, float("inf"))]))  # (N,)
    if bool(finite.all()):
        return []
    return [names[i] for i in (~finite).nonzero().flatten().tolist()]


def training_tensors(
    models: Iterable[torch.nn.Module], optimizers: Iterable[Any]
) -> Iterable[tuple[str, torch.Tensor]]:
    """(name, tensor) of every parameter and every optimizer-state tensor: what a checkpoint stores."""
    param_names: dict[int, str] = {}
    for model in models:
        for name, p in model.named_parameters():
            name = name.removeprefix("module.").removeprefix("_orig_mod.")
            param_names[id(p)] = name
            yield name, p
    for opt in optimizers:
        opt = getattr(opt, "optimizer", opt)  # Accelerate's wrapper
        for p, st in opt.state.items():
            for key, v in st.items():
                if isinstance(v, torch.Tensor):
                    yield f"optimizer {key} of {param_names.get(id(p), '?')}", v


@dataclass
class TrainerState:
    """Where the loop is: enough to continue exactly where it stopped."""

    global_step: int = 0  # optimizer steps taken
    epoch: int = 0  # current epoch (0-based); after an epoch ends this is the next one
    batch_in_epoch: int = 0  # per-process micro-batches of ``epoch`` already consumed
    best_metric: float | None = None
    best_step: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainerState:
        # older checkpoints also hold an always-empty "extra": keys not listed here are ignored
        known = {k: d[k] for k in ("global_step", "epoch", "batch_in_epoch", "best_metric", "best_step") if k in d}
        return cls(**known)


def checkpoint_step(ckpt: Path) -> int:
    return int(_NAME_RE.match(ckpt.name).group(1))


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The commit of the source tree this package runs from (None outside a git checkout)."""
    here = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def list_checkpoints(root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``root`` (a run dir or its ``checkpoints`` dir), oldest first."""
    root = Path(root)
    if (root / CHECKPOINTS_DIR).is_dir():
        root = root / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        m = _NAME_RE.match(d.name)
        if m and d.is_dir() and (d / TRAINER_STATE_FILE).is_file():
            found.append((int(m.group(1)), d))
    return [d for _, d in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path | None:
    """Resolve ``path`` to a checkpoint dir: itself if it is one, else the latest complete one below it."""
    p = Path(path)
    if (p / TRAINER_STATE_FILE).is_file():
        return p
    ckpts = list_checkpoints(p)
    return ckpts[-1] if ckpts else None


def read_trainer_state(ckpt: str | os.PathLike) -> tuple[TrainerState, dict[str, Any]]:
    """The loop state and the full JSON record (config, git commit) of a checkpoint."""
    f = Path(ckpt) / TRAINER_STATE_FILE
    try:
        record = json.loads(f.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{f}: not a training checkpoint (no {TRAINER_STATE_FILE})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{f}: unreadable trainer state ({e})") from None
    if "state" not in record:
        raise ValueError(f"{f}: field 'state' missing; expected a checkpoint written by lxmert-repro")
    return TrainerState.from_dict(record["state"]), record


class CheckpointManager:
    """Saves/loads full training state through an ``accelerate.Accelerator``; one writer (main process)."""

    def __init__(self, accelerator: Any, run_dir: str | os.PathLike, keep_last_k: int | None = 2) -> None:
        self.accelerator = accelerator
        self.root = Path(run_dir) / CHECKPOINTS_DIR
        self.keep_last_k = keep_last_k
        self._commit = git_commit()
        self._confirmed_step = -1  # the loss computed from the weights of this step (and earlier) was finite
        self._extra_kept = False  # pruning kept an unconfirmed-era checkpoint beyond the last k

    def _check_finite(self, state: TrainerState) -> None:
        acc = self.accelerator
        bad = nonfinite_tensors(training_tensors(acc._models, acc._optimizers))  # what save_state writes
        flag = torch.tensor([float(len(bad))], device=acc.device)
        if acc.num_processes > 1:
            flag = acc.reduce(flag, reduction="sum")
        if flag.item() > 0:
            good = self.quarantine_from(state.global_step)
            shown = (
                ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
                if bad
                else "on another process"
            )
            raise NonFiniteStateError(
                f"non-finite parameters or optimizer state at optimizer step {state.global_step} ({shown}); "
                f"checkpoint not written. {good_checkpoint_sentence(good)}"
            )

    def save(self, state: TrainerState, config: dict[str, Any] | None = None) -> Path:
        """Write a checkpoint for ``state`` (all processes must call this). Returns its final path.
        Raises ``NonFiniteStateError`` (writing nothing) when a parameter or optimizer state is NaN/inf."""
        acc = self.accelerator
        self._check_finite(state)
        name = f"step_{state.global_step:09d}"
        final = self.root / name
        tmp = self.root / f".tmp-{name}"
        if acc.is_main_process:
            self.root.mkdir(parents=True, exist_ok=True)
            if tmp.exists():
                shutil.rmtree(tmp)
        acc.wait_for_everyone()
        acc.save_state(str(tmp), safe_serialization=True)
        acc.wait_for_everyone()
        if acc.is_main_process:
            record = {
                "state": state.to_dict(),
                "config": config,
                "git_commit": self._commit,
                "num_processes": acc.num_processes,
                "mixed_precision": str(acc.mixed_precision),
            }
            atomic_write_json(tmp / TRAINER_STATE_FILE, record)
            replace_dir(tmp, final)  # e.g. an epoch end on the same step as a periodic save: the newer wins
            self._prune()
        acc.wait_for_everyone()
        return final

    def _prune(self, keep_good: bool = True) -> None:
        """Keep the last k, and (``keep_good``) the newest checkpoint whose loss was seen finite."""
        if not self.keep_last_k or self.keep_last_k <= 0:
            return
        ckpts = list_checkpoints(self.root)
        old = ckpts[: max(0, len(ckpts) - self.keep_last_k)]
        good = [d for d in ckpts if checkpoint_step(d) <= self._confirmed_step]
        keep = good[-1] if keep_good and good and good[-1] in old else None
        self._extra_kept = keep is not None
        for d in old:
            if d != keep:
                shutil.rmtree(d, ignore_errors=True)

    def confirm(self, step: int) -> None:
        """The loss computed from the weights after ``step`` optimizer steps was finite (on every process):
        checkpoints up to ``step`` are good, and an older one kept only as the last good one can go."""
        if step <= self._confirmed_step:
            return
        self._confirmed_step = step
        if self._extra_kept and self.accelerator.is_main_process:
            self._prune()

    def finish(self) -> None:
        """The run ended normally: prune to the last k (the extra good one is no longer needed)."""
        if self.accelerator.is_main_process:
            self._prune(keep_good=False)

    def quarantine_from(self, step: int) -> Path | None:
        """The loss turned non-finite with the weights of ``step`` (or a later one): rename the checkpoints
        of ``step`` onwards to ``nonfinite-step_*`` and return the newest remaining one (None if there is
        none). All processes must call this."""
        acc = self.accelerator
        if acc.is_main_process:
            for d in list_checkpoints(self.root):
                if checkpoint_step(d) >= step:
                    target = d.with_name(QUARANTINE_PREFIX + d.name)
                    if target.exists():  # an earlier stop at the same step
                        shutil.rmtree(target)
                    os.replace(d, target)
        acc.wait_for_everyone()
        ckpts = list_checkpoints(self.root)
        return ckpts[-1] if ckpts else None

    def load(self, ckpt: str | os.PathLike) -> TrainerState:
        """Restore model/optimizer/scheduler/scaler/RNG from ``ckpt``; return the loop state."""
        ckpt = Path(ckpt)
        state, _ = read_trainer_state(ckpt)
        try:
            self.accelerator.load_state(str(ckpt))
        except RuntimeError as e:  # shape/key mismatch from load_state_dict
            raise RuntimeError(
                f"{ckpt}: cannot resume, the checkpoint does not match this model/optimizer "
                f"(was it written with another model config?): {str(e).splitlines()[0]}"
            ) from e
        return state


def good_checkpoint_sentence(good: Path | None) -> str:
    """The stop message's pointer to where a run can continue from."""
    if good is None:
        return "No good checkpoint exists (none was written before the values turned non-finite)."
    return f"Last good checkpoint: {good} (resume with trainer.resume={good})."


def resolve_resume(resume: str | None, run_dir: str | os.PathLike) -> Path | None:
    """``trainer.resume``: null → fresh start; ``auto`` → latest complete checkpoint of this run dir
    (fresh start if none); a path → that checkpoint (or the latest one under it), which must exist."""
    if resume in (None, "", False, "none", "null"):
        return None
    if str(resume) == "auto":
        return find_checkpoint(run_dir)
    p = Path(str(resume))
    if not p.exists():
        raise FileNotFoundError(f"trainer.resume={resume}: no such file or directory")
    ckpt = find_checkpoint(p)
    if ckpt is None:
        raise FileNotFoundError(
            f"trainer.resume={resume}: no complete checkpoint (step_*/{TRAINER_STATE_FILE}) found there"
        )
    return ckpt
