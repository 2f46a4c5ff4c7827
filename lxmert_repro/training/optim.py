"""Optimizers and the learning-rate schedule used by LXMERT.

``BertAdam`` is the faithful default (docs/faithful.md §5): Adam *without* bias correction, eps 1e-6,
weight decay 0.01 applied to every parameter and added to the update (decoupled, as in the original
BERT code: ``update = m / (sqrt(v) + eps) + wd * p``; ``p -= lr * update``). The original also
scheduled the lr inside the optimizer; here the schedule is a separate ``LambdaLR`` so the same
schedule serves AdamW too. AdamW with the usual no-decay groups (biases, LayerNorm) is the option.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from lxmert_repro.config_schema import check, one_of


@dataclass
class OptimConfig:
    """Schema of the ``optim`` group (configs/optim/); ``optimizer`` and ``scheduler`` are ``_target_`` nodes,
    checked against their targets' signatures."""

    lr: float = 1e-4
    weight_decay: float = 0.01
    no_decay_groups: bool = False
    warmup_ratio: float = 0.05
    implementation: str = "auto"  # BertAdam's kernel (configs/optim/bert_adam.yaml)
    optimizer: Any = None
    scheduler: Any = None

    def __post_init__(self) -> None:
        check(self.lr > 0, "optim.lr", self.lr, "a positive float")
        check(self.weight_decay >= 0, "optim.weight_decay", self.weight_decay, "a float >= 0")
        check(0 <= self.warmup_ratio <= 1, "optim.warmup_ratio", self.warmup_ratio, "a float in [0, 1]")
        one_of("optim.implementation", self.implementation, BERT_ADAM_IMPLEMENTATIONS)


log = logging.getLogger(__name__)


BERT_ADAM_IMPLEMENTATIONS = ("auto", "loop", "foreach", "fused")


def _bert_adam_loop(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The reference: one parameter at a time, ~9 tensor operations each."""
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        m.mul_(b1).add_(g, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(g, g, value=1.0 - b2)
        update = m / (v.sqrt() + eps)  # no bias correction (BERT's original)
        if weight_decay > 0.0:
            update.add_(p, alpha=weight_decay)
        p.add_(update, alpha=-lr)


def _bert_adam_foreach(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """The same operations on whole lists (multi-tensor kernels on a GPU: a few launches per group, not
    ~9 per parameter); bit-identical to the loop. Lists must share one device and dtype."""
    torch._foreach_mul_(exp_avgs, b1)
    torch._foreach_add_(exp_avgs, grads, alpha=1.0 - b1)
    torch._foreach_mul_(exp_avg_sqs, b2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1.0 - b2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_add_(denom, eps)
    updates = torch._foreach_div(exp_avgs, denom)
    del denom
    if weight_decay > 0.0:
        torch._foreach_add_(updates, params, alpha=weight_decay)
    torch._foreach_add_(params, updates, alpha=-lr)


def _bert_adam_one(
    p: torch.Tensor,
    g: torch.Tensor,
    m: torch.Tensor,
    v: torch.Tensor,
    neg_lr: torch.Tensor,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """One parameter, written for ``torch.compile``: the update becomes one generated loop that reads p, g, m,
    v once and writes p, m, v once (the eager loop makes ~9 passes over memory). Each line rounds as the
    eager operation in the comment does (those compute ``a + alpha * b`` as one fused multiply-add);
    ``neg_lr`` is a 0-d tensor, so a new lr every step does not recompile."""
    from torch._inductor import inductor_prims  # noqa: F401  (registers prims.fma: a * b + c, rounded once)

    fma = torch.ops.prims.fma
    m.copy_(fma(g, 1.0 - b1, m * b1))  # m.mul_(b1).add_(g, alpha=1 - b1)
    v.copy_(fma(g * (1.0 - b2), g, v * b2))  # v.mul_(b2).addcmul_(g, g, value=1 - b2)
    update = m / (v.sqrt() + eps)
    if weight_decay > 0.0:
        update = fma(p, weight_decay, update)  # update.add_(p, alpha=weight_decay)
    p.copy_(fma(update, neg_lr, p))  # p.add_(update, alpha=-lr)


_compiled_one: Any = None
_fused_unavailable = False


def _mark_fused_unavailable(error: Exception) -> None:
    """``implementation=auto`` when the fused kernel cannot be compiled here: foreach from now on, said once."""
    global _fused_unavailable
    _fused_unavailable = True
    log.warning(
        "BertAdam: the fused kernel could not be compiled (%s); using the foreach implementation "
        "(the same update, slower on a CPU)",
        str(error).strip().splitlines()[0][:200],
    )


FUSED_MIN_NUMEL = 4096  # smaller tensors (biases, LayerNorm) are updated together: a compiled call costs ~30 us


def _compiled() -> Any:
    global _compiled_one
    if _compiled_one is None:
        _compiled_one = torch.compile(_bert_adam_one, dynamic=True, fullgraph=True)
    return _compiled_one


def _bert_adam_fused(
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    exp_avgs: list[torch.Tensor],
    exp_avg_sqs: list[torch.Tensor],
    *,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
) -> None:
    """``_bert_adam_one`` compiled once per process with dynamic sizes (one kernel serves every tensor of a
    dtype), called on each tensor. Same formula: the moments come out bit-identical to the loop's, the
    parameters within an ulp (the generated sqrt rounds differently from the eager one; 1e-7 after 25 steps in
    tests/test_optim.py). ``BertAdam`` sends tensors under ``FUSED_MIN_NUMEL`` values through ``_SmallPack``."""
    neg_lr = torch.tensor(-lr, dtype=params[0].dtype, device=params[0].device)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs):
        if p.is_contiguous() and g.is_contiguous() and m.is_contiguous() and v.is_contiguous():
            p, g, m, v = p.view(-1), g.view(-1), m.view(-1), v.view(-1)  # one kernel for every shape
        _compiled()(p, g, m, v, neg_lr, b1, b2, eps, weight_decay)


class _SmallPack:
    """The small tensors of a group updated by ONE compiled call instead of one each (a bias or LayerNorm
    vector costs the call's ~30 us, not its arithmetic). Their moments live in two flat buffers, of which the
    optimizer state holds views; parameters and gradients are gathered into flat buffers each step and the
    parameters copied back. Rebuilt when the set of tensors changes or the state was replaced (a resume)."""

    def __init__(self, params: list[torch.Tensor], state: Mapping[torch.Tensor, dict[str, Any]]) -> None:
        self.ids = [id(p) for p in params]
        sizes = [p.numel() for p in params]
        self.m = torch.cat([state[p]["exp_avg"].reshape(-1) for p in params])
        self.v = torch.cat([state[p]["exp_avg_sq"].reshape(-1) for p in params])
        self.p = torch.empty_like(self.m)
        self.g = torch.empty_like(self.m)
        self.m_views = [x.view_as(p) for x, p in zip(self.m.split(sizes), params)]
        self.v_views = [x.view_as(p) for x, p in zip(self.v.split(sizes), params)]
        self.p_views = [x.view_as(p) for x, p in zip(self.p.split(sizes), params)]
        for p, m, v in zip(params, self.m_views, self.v_views):
            state[p]["exp_avg"], state[p]["exp_avg_sq"] = m, v

    def matches(self, params: list[torch.Tensor], state: Mapping[torch.Tensor, dict[str, Any]]) -> bool:
        return self.ids == [id(p) for p in params] and all(
            state[p]["exp_avg"] is m and state[p]["exp_avg_sq"] is v
            for p, m, v in zip(params, self.m_views, self.v_views)
        )

    def step(
        self,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        *,
        lr: float,
        b1: float,
        b2: float,
        eps: float,
        weight_decay: float,
    ) -> None:
        torch.cat([p.reshape(-1) for p in params], out=self.p)
        torch.cat([g.reshape(-1) for g in grads], out=self.g)
        neg_lr = torch.tensor(-lr, dtype=self.p.dtype, device=self.p.device)
        _compiled()(self.p, self.g, self.m, self.v, neg_lr, b1, b2, eps, weight_decay)
        torch._foreach_copy_(params, self.p_views)


def _by_device_and_dtype(*lists: list[torch.Tensor]) -> list[tuple[list[torch.Tensor], ...]]:
    """Split parallel lists so each part shares one device and dtype (what multi-tensor kernels need)."""
    parts: dict[tuple[torch.device, torch.dtype], tuple[list[torch.Tensor], ...]] = {}
    for items in zip(*lists):
        part = parts.setdefault((items[0].device, items[0].dtype), tuple([] for _ in lists))
        for dst, t in zip(part, items):
            dst.append(t)
    return list(parts.values())


class BertAdam(Optimizer):
    """Adam without bias correction and with decoupled weight decay (BERT's original optimizer).

    Per parameter ``p`` with gradient ``g``:
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        update = m / (sqrt(v) + eps) + weight_decay * p
        p = p - lr * update

    ``implementation``: ``loop`` (one parameter at a time, the reference), ``foreach`` (multi-tensor
    operations, bit-identical to the loop), ``fused`` (one compiled single-pass kernel per large parameter and
    one for all small ones; moments bit-identical, parameters within an ulp), ``auto`` (fused on CPU, where it
    is ~4x faster than the loop on the base model and 1.1x AdamW fused: benchmarks/bench_optim.py; foreach on
    GPUs, a few multi-tensor launches per step; the compiled path there is not measured yet).
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.01,
        implementation: str = "foreach",
    ) -> None:
        if lr < 0.0:
            raise ValueError(f"BertAdam: lr must be >= 0, got {lr}")
        b1, b2 = betas
        if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
            raise ValueError(f"BertAdam: betas must be in [0, 1), got {betas}")
        if eps < 0.0:
            raise ValueError(f"BertAdam: eps must be >= 0, got {eps}")
        if implementation not in BERT_ADAM_IMPLEMENTATIONS:
            raise ValueError(
                f"BertAdam: implementation must be one of {BERT_ADAM_IMPLEMENTATIONS}, got {implementation!r}"
            )
        self.implementation = implementation
        self._packs: dict[tuple, _SmallPack] = {}  # fused: the small tensors' flat buffers, per group part
        defaults = dict(lr=lr, betas=(float(b1), float(b2)), eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)

    def _step_fn(self, device: torch.device) -> str:
        impl = self.implementation
        if impl == "auto":
            impl = "fused" if device.type == "cpu" and not _fused_unavailable else "foreach"
        return impl

    def _fused(
        self,
        key: tuple,
        params: list[torch.Tensor],
        grads: list[torch.Tensor],
        exp_avgs: list[torch.Tensor],
        exp_avg_sqs: list[torch.Tensor],
        **kw: Any,
    ) -> None:
        """Big tensors one compiled call each, the small ones of this group part together (``_SmallPack``)."""
        big = [i for i, p in enumerate(params) if p.numel() >= FUSED_MIN_NUMEL]
        if big:
            _bert_adam_fused(
                [params[i] for i in big],
                [grads[i] for i in big],
                [exp_avgs[i] for i in big],
                [exp_avg_sqs[i] for i in big],
                **kw,
            )
        small = [i for i, p in enumerate(params) if p.numel() < FUSED_MIN_NUMEL]
        if not small:
            return
        ps, gs = [params[i] for i in small], [grads[i] for i in small]
        pack = self._packs.get(key)
        if pack is None or not pack.matches(ps, self.state):
            pack = self._packs[key] = _SmallPack(ps, self.state)
        pack.step(ps, gs, **kw)

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for gi, group in enumerate(self.param_groups):
            params, grads, exp_avgs, exp_avg_sqs = [], [], [], []
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("BertAdam does not support sparse gradients")
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                params.append(p)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
            b1, b2 = group["betas"]
            for part in _by_device_and_dtype(params, grads, exp_avgs, exp_avg_sqs):
                kw = dict(lr=group["lr"], b1=b1, b2=b2, eps=group["eps"], weight_decay=group["weight_decay"])
                device, impl = part[0][0].device, self._step_fn(part[0][0].device)
                if impl == "loop":
                    _bert_adam_loop(*part, **kw)
                elif impl == "foreach":
                    _bert_adam_foreach(*part, **kw)
                else:
                    try:
                        self._fused((gi, device, part[0][0].dtype), *part, **kw)
                    except torch._dynamo.exc.BackendCompilerFailed as e:  # no C++ compiler, say; nothing updated
                        if self.implementation != "auto":
                            raise
                        _mark_fused_unavailable(e)
                        _bert_adam_foreach(*part, **kw)
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
