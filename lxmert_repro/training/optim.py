"""Optimizers and the learning-rate schedule used by LXMERT.

``BertAdam`` is the faithful default (docs/faithful.md §5): Adam *without* bias correction, eps 1e-6,
weight decay 0.01 applied to every parameter and added to the update (decoupled, as in the original
BERT code: ``update = m / (sqrt(v) + eps) + wd * p``; ``p -= lr * update``). The original also
scheduled the lr inside the optimizer; here the schedule is a separate ``LambdaLR`` so the same
schedule serves AdamW too. AdamW with the usual no-decay groups (biases, LayerNorm) is the option.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lxmert_repro.config_schema import check


@dataclass
class OptimConfig:
    """Schema of the ``optim`` group (configs/optim/); ``optimizer`` and ``scheduler`` are ``_target_`` nodes,
    checked against their targets' signatures."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    no_decay_groups: bool = False
    warmup_ratio: float = 0.05
    optimizer: Any = None
    scheduler: Any = None

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", self.lr, "a positive float")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a float >= 0")
        check(0 <= self.warmup_ratio <= 1, "optim.warmup_ratio", self.warmup_ratio, "a float in [0, 1]")


class BertAdam(Optimizer):
    """Adam without bias correction and with decoupled weight decay (BERT's original optimizer).

    Per parameter ``p`` with gradient ``g``:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = m / (sqrt(v) + eps) + weight_decay * p
        p = p - lr * update
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"BertAdam: lr must be >= 0, got {lr}")
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"BertAdam: betas must be in [0, 1), got {betas}")
        if eps < 0.0:
            raise ValueError(f"BertAdam: eps must be >= 0, got {eps}")
        defaults = dict(lr=lr, betas=(float(b1), float(b2)), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(grad, alpha=1.0 - b1)
                v.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
                update = m / (v.sqrt() + group["eps"])  # no bias correction (BERT's original)
                if group["weight_decay"] > 0.0:
                    update.add_(p, alpha=group["weight_decay"])
                p.add_(update, alpha=-group["lr"])
                state["step"] += 1
        return loss


def _no_decay_names(model: nn.Module) -> set[str]:
    """Names of parameters that conventionally skip weight decay: biases and normalisation weights."""
    names: set[str] = set()
    norm_types = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d, nn.BatchNorm2d)
    for mod_name, module in model.named_modules():
        for p_name, _ in module.named_parameters(recurse=False):
            full = f"{mod_name}.{p_name}" if mod_name else p_name
            if p_name.endswith("bias") or isinstance(module, norm_types) or "layernorm" in full.lower():
                names.add(full)
    return names


def param_groups(model: nn.Module, weight_decay: float, no_decay_groups: bool) -> list[dict[str, Any]]:
    """Parameter groups for the optimizer.

    ``no_decay_groups=False`` (BertAdam as in the original): one group, decay on ALL trainable parameters.
    ``no_decay_groups=True`` (the usual AdamW recipe): biases and LayerNorm weights get decay 0.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not no_decay_groups:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    skip = _no_decay_names(model)
    decay = [p for n, p in named if n not in skip]
    no_decay = [p for n, p in named if n in skip]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_linear_factor(step: int, total_steps: int, warmup_ratio: float) -> float:
    """LR multiplier: linear 0 → 1 over the first ``warmup_ratio`` of steps, then linear 1 → 0 at the end.

    Same curve as the original ``warmup_linear(x = step / total, warmup)``.
    """
    if total_steps <= 0:
        raise ValueError(f"total_steps must be > 0, got {total_steps}")
    x = step / total_steps
    if warmup_ratio > 0.0 and x < warmup_ratio:
        return x / warmup_ratio
    if warmup_ratio >= 1.0:
        return 1.0
    return max((1.0 - x) / (1.0 - warmup_ratio), 0.0)


def linear_warmup_schedule(optimizer: Optimizer, total_steps: int, warmup_ratio: float) -> LambdaLR:
    """Linear warmup for ``warmup_ratio * total_steps`` optimizer steps, then linear decay to 0."""
    if not 0.0 <= warmup_ratio <= 1.0:
        raise ValueError(f"optim.warmup_ratio must be in [0, 1], got {warmup_ratio}")
    return LambdaLR(optimizer, lambda s: warmup_linear_factor(s, total_steps, warmup_ratio))
