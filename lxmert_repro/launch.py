"""How every entry point asks Accelerate for its device, so multi-process launches work on any machine."""

from __future__ import annotations

import torch


def use_cpu(requested: bool | None = False) -> bool:
    """``cpu`` argument for ``Accelerator``/``PartialState``.

    Accelerate only sets up a process group on CPU (gloo, ``MULTI_CPU``) when it is told ``cpu=True``; without it a
    ``torchrun --nproc_per_node 2`` on a GPU-less machine gives every process ``num_processes=1`` and ``is_main=True``,
    so they all write the same files and train independent models. Asking for the CPU when there is no GPU to use
    changes nothing for single-process runs.
    """
    has_accelerator = torch.cuda.is_available() or (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    )
    return bool(requested) or not has_accelerator
