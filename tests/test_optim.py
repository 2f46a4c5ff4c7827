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
