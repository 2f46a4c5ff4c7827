"""BertAdam against a hand computation; param groups; the warmup-linear schedule."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lxmert_repro.training.optim import (
    BertAdam,
    linear_warmup_schedule,
    param_groups,
    warmup_linear_factor,
)


def test_bert_adam_matches_hand_computation():
    p = nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BertAdam([p], lr=0.1, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01)
    grads = [torch.tensor([0.5, -1.0]), torch.tensor([-0.2, 0.3])]
    # hand computation, plain floats
    w = [1.0, -2.0]
    m = [0.0, 0.0]
    v = [0.0, 0.0]
    for g in grads:
        for i in range(2):
            m[i] = 0.9 * m[i] + 0.1 * g[i].item()
            v[i] = 0.999 * v[i] + 0.001 * g[i].item() ** 2
            upd = m[i] / (math.sqrt(v[i]) + 1e-6) + 0.01 * w[i]  # no bias correction; decay added to update
            w[i] = w[i] - 0.1 * upd
        p.grad = g.clone()
        opt.step()
    assert torch.allclose(p.detach(), torch.tensor(w), atol=1e-6), (p, w)
    # first step of bias-corrected Adam would move by ~lr; BertAdam moves by lr * m/sqrt(v) = lr * 0.1/sqrt(0.001)
    assert abs(w[0] - 1.0) > 0.1


def test_bert_adam_first_step_has_no_bias_correction():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(4))
    b = nn.Parameter(a.detach().clone())
    start = a.detach().clone()
    o1 = BertAdam([a], lr=1e-2, weight_decay=0.0)
    o2 = torch.optim.Adam([b], lr=1e-2, eps=1e-6)
    g = torch.randn(4)
    a.grad, b.grad = g.clone(), g.clone()
    o1.step()
    o2.step()
    # Adam's first step is ~lr * sign(g); without bias correction it is (1-b1)/sqrt(1-b2) = 3.16 times that
    ratio = (a.detach() - start) / (b.detach() - start)
    assert torch.allclose(ratio, torch.full((4,), 0.1 / math.sqrt(0.001)), atol=1e-3)


def test_param_groups_decay_all_vs_no_decay():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Linear(4, 2))
    g_all = param_groups(model, 0.01, no_decay_groups=False)
    assert len(g_all) == 1 and len(g_all[0]["params"]) == 6 and g_all[0]["weight_decay"] == 0.01
    g = param_groups(model, 0.01, no_decay_groups=True)
    assert [len(x["params"]) for x in g] == [2, 4]  # two Linear weights decay; 2 biases + LN w/b do not
    assert g[1]["weight_decay"] == 0.0


def test_warmup_linear_schedule_shape():
    assert warmup_linear_factor(0, 100, 0.1) == 0.0
    assert warmup_linear_factor(5, 100, 0.1) == pytest.approx(0.5)
    assert warmup_linear_factor(10, 100, 0.1) == pytest.approx(1.0)
    assert warmup_linear_factor(55, 100, 0.1) == pytest.approx(0.5)
    assert warmup_linear_factor(100, 100, 0.1) == 0.0
    p = nn.Parameter(torch.zeros(1))
    opt = BertAdam([p], lr=1.0)
    sched = linear_warmup_schedule(opt, total_steps=10, warmup_ratio=0.2)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        p.grad = torch.ones(1)
        opt.step()
        sched.step()
    assert lrs == pytest.approx([0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125])
    with pytest.raises(ValueError, match="warmup_ratio"):
        linear_warmup_schedule(opt, 10, 1.5)


@torch.no_grad()
def _reference_bert_adam_step(params, state, group):
    """The per-parameter BertAdam update as first written (kept here as the reference for the fast paths)."""
    b1, b2 = group["betas"]
    for p in params:
        if p.grad is None:
            continue
        st = state.setdefault(p, {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)})
        m, v = st["exp_avg"], st["exp_avg_sq"]
        m.mul_(b1).add_(p.grad, alpha=1.0 - b1)
        v.mul_(b2).addcmul_(p.grad, p.grad, value=1.0 - b2)
        update = m / (v.sqrt() + group["eps"])
        if group["weight_decay"] > 0.0:
            update.add_(p, alpha=group["weight_decay"])
        p.add_(update, alpha=-group["lr"])


def _groups_like_a_model(seed: int) -> list[list[nn.Parameter]]:
    """Weights N(0, 0.02) and LayerNorm-like ones; sizes below and above the fused path's FUSED_MIN_NUMEL, odd
    sizes (vector tails), a 3-d tensor, one parameter sometimes without a gradient."""
    g = torch.Generator().manual_seed(seed)
    shapes = [[(33, 17), (17,), (5, 3, 2), (64, 80)], [(64, 48), (48,), (1,)], [(4099,), (129,)]]
    groups = []
    for i, group in enumerate(shapes):
        ps = []
        for j, s in enumerate(group):
            init = torch.ones(s) if (i == 2 and j == 0) else torch.randn(s, generator=g) * 0.02
            ps.append(nn.Parameter(init))
        groups.append(ps)
    return groups


@pytest.mark.parametrize("implementation", ["foreach", "fused"])
def test_fast_bert_adam_follows_the_per_parameter_formula(implementation):
    """25 steps, three groups (decay on, off, another lr), warmup then decay: the fast paths give the
    reference's parameters and moments (foreach exactly; fused within 1e-7 absolute + relative, its generated
    kernel rounds a few products differently)."""
    ref_groups, fast_groups = _groups_like_a_model(0), _groups_like_a_model(0)
    cfg = [dict(weight_decay=0.01), dict(weight_decay=0.0), dict(weight_decay=0.01, lr=3e-3)]
    fast = BertAdam([dict(params=ps, **c) for ps, c in zip(fast_groups, cfg)], lr=1e-2, implementation=implementation)
    ref = BertAdam([dict(params=ps, **c) for ps, c in zip(ref_groups, cfg)], lr=1e-2, implementation="loop")
    schedules = [linear_warmup_schedule(o, total_steps=25, warmup_ratio=0.2) for o in (fast, ref)]
    ref_state: dict = {}
    g = torch.Generator().manual_seed(1)
    for step in range(25):
        for gi, (rps, fps) in enumerate(zip(ref_groups, fast_groups)):
            for pi, (rp, fp) in enumerate(zip(rps, fps)):
                if gi == 1 and pi == 2 and step % 3 == 0:  # sometimes without a gradient: skipped
                    rp.grad = fp.grad = None
                    continue
                grad = torch.randn(rp.shape, generator=g) * 10.0 ** (-(step % 4))
                rp.grad, fp.grad = grad.clone(), grad.clone()
        for group in ref.param_groups:
            _reference_bert_adam_step(group["params"], ref_state, group)
        fast.step()
        for s in schedules:
            s.step()
    exact = implementation == "foreach"
    for rps, fps in zip(ref_groups, fast_groups):
        for rp, fp in zip(rps, fps):
            for key in ("exp_avg", "exp_avg_sq"):
                a, b = fast.state[fp][key], ref_state[rp][key]
                assert torch.equal(a, b) if exact else torch.allclose(a, b, rtol=1e-7, atol=1e-7), key
            if exact:
                assert torch.equal(fp.detach(), rp.detach())
            else:
                assert torch.allclose(fp.detach(), rp.detach(), rtol=1e-7, atol=1e-7)
    assert not torch.equal(ref_groups[0][0].detach(), _groups_like_a_model(0)[0][0].detach())  # it moved
    assert fast.state[fast_groups[1][2]]["step"] == 25 - 9  # steps without a gradient are not counted
    if implementation == "fused":  # the compiled kernel did run (and rounds differently somewhere)
        assert any(not torch.equal(fp, rp) for rps, fps in zip(ref_groups, fast_groups) for rp, fp in zip(rps, fps))


def test_bert_adam_implementation_is_checked():
    with pytest.raises(ValueError, match="implementation"):
        BertAdam([nn.Parameter(torch.zeros(2))], implementation="cuda-magic")


def test_fused_bert_adam_resumes_from_its_state_dict():
    """The fused path keeps small tensors' moments in flat buffers: a state_dict round trip (a resume) and a
    parameter losing its gradient rebuild them, and the run continues as if uninterrupted."""

    def run(split: bool) -> list[torch.Tensor]:
        torch.manual_seed(0)
        ps = [nn.Parameter(torch.randn(s) * 0.02) for s in [(70, 70), (31,), (5, 4), (9,)]]
        opt = BertAdam(ps, lr=1e-2, implementation="fused")
        g = torch.Generator().manual_seed(2)
        for step in range(10):
            if split and step == 5:
                saved = opt.state_dict()
                opt = BertAdam(ps, lr=1e-2, implementation="fused")
                opt.load_state_dict(saved)
            for i, p in enumerate(ps):
                p.grad = None if (i == 3 and step == 7) else torch.randn(p.shape, generator=g)
            opt.step()
        return [p.detach().clone() for p in ps] + [opt.state[p]["exp_avg_sq"] for p in ps]

    for a, b in zip(run(False), run(True)):
        assert torch.equal(a, b)
