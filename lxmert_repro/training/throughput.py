"""Live throughput between log steps: samples/s, tokens/s (text tokens + boxes), model FLOP/s and MFU.

MFU = model FLOPs per second (``lxmert_repro.modeling.flops``: 3 forwards per training step) / the device's
dense peak. The peak comes from ``trainer.peak_flops`` when set, else from ``PEAK_FLOPS`` by GPU name; on a CPU
(or an unknown GPU) without ``trainer.peak_flops`` the MFU is left out rather than guessed.
"""

from __future__ import annotations

from typing import Any

import torch

# Dense (no sparsity) bf16 tensor-core peak per device, FLOP/s, from the vendors' data sheets. Matched as
# substrings of torch.cuda.get_device_name(), the first match wins (so "H100 PCIe" before "H100").
PEAK_FLOPS: tuple[tuple[str, float], ...] = (
    ("H200", 989.4e12),
    ("H100 PCIe", 756.0e12),
    ("H100", 989.4e12),  # SXM
    ("GH200", 989.4e12),
    ("A100", 312.0e12),
    ("A10", 125.0e12),
    ("L40S", 362.0e12),
    ("L4", 121.0e12),
    ("V100", 125.0e12),  # fp16 (V100 has no bf16)
    ("T4", 65.0e12),  # fp16
)


def device_peak_flops(device: torch.device, override: float | None = None) -> float | None:
    """Peak FLOP/s of ``device``: ``override`` (``trainer.peak_flops``) if given, the table for a known GPU, else None."""
    if override:
        return float(override)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_FLOPS if key in name), None)


class ThroughputMeter:
    """Sums samples, text tokens, boxes and model FLOPs per micro-batch; ``rates`` turns them into per-second
    figures at a log step. Token and FLOP counts may be device tensors: they are summed on the device and read
    back with the step's other logged values (``totals``), not once per micro-batch."""

    def __init__(self, peak_flops: float | None) -> None:
        self.peak_flops = peak_flops
        self.reset()

    def reset(self) -> None:
        self.samples = 0
        self.work: dict[str, Any] = {}

    def add(self, samples: int, **work: Any) -> None:
        """``work``: tokens=, boxes=, flops= (numbers or 0-d tensors) of one micro-batch on this process."""
        self.samples += samples
        for k, v in work.items():
            self.work[k] = self.work.get(k, 0) + v

    @staticmethod
    def rates(
        samples: int, totals: dict[str, float], seconds: float, num_processes: int, peak_flops: float | None
    ) -> dict[str, float]:
        """Per-second figures from the totals of all processes over ``seconds``; MFU per device."""
        s = max(seconds, 1e-9)
        out = {"samples_per_s": samples / s}
        if "tokens" in totals or "boxes" in totals:
            out["tokens_per_s"] = (totals.get("tokens", 0.0) + totals.get("boxes", 0.0)) / s
        if "flops" in totals:
            out["model_flops_per_s"] = totals["flops"] / s
            if peak_flops:
                out["mfu"] = totals["flops"] / s / (peak_flops * num_processes)
        return out
