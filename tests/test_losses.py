"""The pretraining / VQA loss formulas computed independently (plain loops) on a fixed small batch
(docs/faithful.md §4, §6)."""

from __future__ import annotations

import math

import pytest
import torch
from model_helpers import make_batch, tiny_config

from lxmert_repro.modeling import LxmertForPreTraining, PretrainObjectives
from lxmert_repro.modeling import losses as L


def log_softmax_at(row: torch.Tensor, idx: int) -> float:
    row = row.double()
    return float(row[idx] - torch.logsumexp(row, 0))


def smooth_l1(d: float) -> float:
    return 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5


@pytest.fixture(scope="module")
def run():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = LxmertForPreTraining(cfg.replace(sparse_predictions=False)).eval()
    batch = make_batch(cfg, b=4, t=7, n=6, pad_boxes=True)
    with torch.no_grad():
        out = model(**batch)
    return cfg, batch, out


def test_mlm_is_mean_ce_over_masked_tokens(run):
    cfg, batch, out = run
    terms = [
        -log_softmax_at(out.mlm_logits[i, j], int(batch["mlm_labels"][i, j]))
        for i in range(4)
        for j in range(7)
        if batch["mlm_labels"][i, j] != -100
    ]
    assert len(terms) == 5
    assert out.losses["mlm"].item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)


def test_itm_is_mean_ce(run):
    cfg, batch, out = run
    terms = [-log_softmax_at(out.itm_logits[i], int(batch["itm_labels"][i])) for i in range(4)]
    assert out.losses["itm"].item() == pytest.approx(sum(terms) / 4, rel=1e-5)


def test_qa_ignores_mismatched_pairs(run):
    cfg, batch, out = run
    terms = [
        -log_softmax_at(out.qa_logits[i], int(batch["qa_labels"][i])) for i in range(4) if batch["itm_labels"][i] == 1
    ]
    assert len(terms) == 3
    assert out.losses["qa"].item() == pytest.approx(sum(terms) / 3, rel=1e-5)
    # The model also drops QA for itm_labels == 0 even if the data side left a label there.
    labels = batch["qa_labels"].clone()
    labels[1] = 2
    assert L.qa_loss(out.qa_logits, labels, batch["itm_labels"]).item() == pytest.approx(sum(terms) / 3, rel=1e-5)


@pytest.mark.parametrize("name", ["obj", "attr"])
def test_object_and_attribute_ce_weighted_by_confidence_over_all_real_boxes(run, name):
    cfg, batch, out = run
    logits, labels, conf = getattr(out, f"{name}_logits"), batch[f"{name}_labels"], batch[f"{name}_conf"]
    real = batch["visual_mask"].bool()
    total = sum(
        -log_softmax_at(logits[i, j], int(labels[i, j])) * float(conf[i, j])
        for i in range(4)
        for j in range(6)
        if real[i, j]
    )
    n_real = int(real.sum())  # 6+5+4+3 = 18 real boxes; masked or not, all count
    assert n_real == 18
    expect = total / n_real / 0.15
    assert out.losses[name].item() == pytest.approx(expect, rel=1e-5)


def test_feature_regression_on_masked_boxes_divided_by_all_real_boxes(run):
    cfg, batch, out = run
    real, masked = batch["visual_mask"].bool(), batch["masked_boxes"]
    total = 0.0
    for i in range(4):
        for j in range(6):
            if real[i, j] and masked[i, j]:
                diffs = (out.feat_pred[i, j] - batch["feat_targets"][i, j]).tolist()
                total += sum(smooth_l1(d) for d in diffs) / len(diffs)
    expect = total / int(real.sum()) / 0.15
    assert out.losses["feat"].item() == pytest.approx(expect, rel=1e-5)


def test_total_is_sum_with_visual_normalizer(run):
    cfg, batch, out = run
    assert PretrainObjectives().visual_loss_normalizer == pytest.approx(1 / 0.15)
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.losses.values()), rel=1e-6)


def test_alternatives_masked_only_and_masked_denominator(run):
    cfg, batch, out = run
    real, masked = batch["visual_mask"].bool(), batch["masked_boxes"]
    sel = real & masked
    logits, labels, conf = out.obj_logits, batch["obj_labels"], batch["obj_conf"]
    total = sum(
        -log_softmax_at(logits[i, j], int(labels[i, j])) * float(conf[i, j])
        for i in range(4)
        for j in range(6)
        if sel[i, j]
    )
    got = L.visual_label_loss(
        logits, labels, conf, batch["visual_mask"], masked, masked_only=True, denominator="masked_boxes"
    )
    assert got.item() == pytest.approx(total / int(sel.sum()), rel=1e-5)
    got_all = L.visual_label_loss(logits, labels, conf, batch["visual_mask"], masked, masked_only=True)
    assert got_all.item() == pytest.approx(total / int(real.sum()), rel=1e-5)


def test_vqa_bce_times_num_answers():
    logits = torch.tensor([[0.5, -1.0, 2.0], [0.0, 1.0, -0.5]])
    targets = torch.tensor([[1.0, 0.0, 0.3], [0.0, 0.9, 0.0]])
    total = 0.0
    for i in range(2):
        for a in range(3):
            x, y = float(logits[i, a]), float(targets[i, a])
            p = 1 / (1 + math.exp(-x))
            total += -(y * math.log(p) + (1 - y) * math.log(1 - p))
    assert L.vqa_loss(logits, targets).item() == pytest.approx(total / 6 * 3, rel=1e-6)
