"""FLOPs counted from the config equal torch's FlopCounterMode on the real model, several configs and lengths."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from lxmert_repro.modeling import LxmertConfig, LxmertForPreTraining, PretrainObjectives
from lxmert_repro.modeling.flops import TRAIN_FLOPS_PER_FORWARD, pretraining_forward_flops, vqa_forward_flops
from lxmert_repro.modeling.vqa import LxmertForVQA

torch.set_num_threads(1)

SMALL = LxmertConfig(
    vocab_size=53,
    hidden_size=16,
    num_attention_heads=2,
    intermediate_size=24,
    max_position_embeddings=32,
    l_layers=2,
    r_layers=1,
    x_layers=2,
    visual_feat_dim=12,
    num_object_labels=7,
    num_attr_labels=5,
    num_qa_labels=6,
)


def _batch(cfg: LxmertConfig, b: int, t: int, n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    mlm = torch.rand(b, t, generator=g) < 0.3
    visual_mask = torch.ones(b, n, dtype=torch.long)
    visual_mask[0, -2:] = 0  # padding boxes: masked but not real, so not regressed
    return dict(
        input_ids=torch.randint(1, cfg.vocab_size, (b, t), generator=g),
        attention_mask=torch.ones(b, t, dtype=torch.long),
        visual_feats=torch.rand(b, n, cfg.visual_feat_dim, generator=g),
        visual_boxes=torch.rand(b, n, 4, generator=g),
        visual_mask=visual_mask,
        mlm_labels=torch.randint(0, cfg.vocab_size, (b, t), generator=g).masked_fill(~mlm, -100),
        itm_labels=torch.randint(0, 2, (b,), generator=g),
        obj_labels=torch.randint(0, cfg.num_object_labels, (b, n), generator=g),
        obj_conf=torch.rand(b, n, generator=g),
        attr_labels=torch.randint(0, cfg.num_attr_labels, (b, n), generator=g),
        attr_conf=torch.rand(b, n, generator=g),
        feat_targets=torch.rand(b, n, cfg.visual_feat_dim, generator=g),
        masked_boxes=torch.rand(b, n, generator=g) < 0.4,
        qa_labels=torch.randint(0, cfg.num_qa_labels, (b,), generator=g),
    )


def _counted(fn) -> int:
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "cfg,objectives,b,t,n",
    [
        (SMALL, None, 3, 7, 5),
        (SMALL, None, 2, 20, 36),
        (dataclasses.replace(SMALL, sparse_predictions=False, hidden_size=24, num_attention_heads=4), None, 2, 11, 9),
        (
            dataclasses.replace(SMALL, l_layers=1, r_layers=3, x_layers=1),
            PretrainObjectives(task_qa=False, visual_attr_loss=False),
            4,
            9,
            10,
        ),
    ],
)
def test_pretraining_flops_equal_flop_counter(cfg, objectives, b, t, n):
    torch.manual_seed(0)
    # training mode: attention with dropout takes the matmul path (FlopCounterMode does not count the CPU
    # flash-attention kernel that eval mode's scaled_dot_product_attention runs)
    model = LxmertForPreTraining(cfg, objectives).train()
    batch = _batch(cfg, b, t, n)
    mlm_rows = int((batch["mlm_labels"] != -100).sum())
    feat_rows = int((batch["masked_boxes"] & batch["visual_mask"].bool()).sum())
    expected = pretraining_forward_flops(cfg, b, t, n, mlm_rows=mlm_rows, feat_rows=feat_rows, objectives=objectives)
    assert _counted(lambda: model(**batch)) == expected


def test_vqa_flops_equal_flop_counter():
    torch.manual_seed(0)
    model = LxmertForVQA(SMALL, num_answers=13).train()
    batch = {
        k: v
        for k, v in _batch(SMALL, 3, 8, 6).items()
        if k in ("input_ids", "attention_mask", "visual_feats", "visual_boxes", "visual_mask")
    }
    assert _counted(lambda: model(**batch)) == vqa_forward_flops(SMALL, 3, 8, 6, 13)


def test_training_step_is_three_forwards():
    """Backward = 2x forward for every product but the input Linears' (no input gradient): within 2% of 3x."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(SMALL, hidden_size=32, intermediate_size=64)
    model = LxmertForPreTraining(cfg).train()
    batch = _batch(cfg, 4, 12, 8)
    forward = pretraining_forward_flops(
        cfg,
        4,
        12,
        8,
        mlm_rows=int((batch["mlm_labels"] != -100).sum()),
        feat_rows=int((batch["masked_boxes"] & batch["visual_mask"].bool()).sum()),
    )
    step = _counted(lambda: model(**batch).loss.backward())
    assert TRAIN_FLOPS_PER_FORWARD * forward * 0.98 <= step <= TRAIN_FLOPS_PER_FORWARD * forward
