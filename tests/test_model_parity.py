"""Parity with transformers' Lxmert (an implementation nobody here wrote): tiny size, random weights, fp32, eval."""

from __future__ import annotations

import pytest
import torch
import transformers
from model_helpers import hf_inputs, hf_twin, inputs_of, make_batch, tiny_config

from lxmert_repro.modeling import LxmertForPreTraining, LxmertForVQA, LxmertModel
from lxmert_repro.modeling.convert import (
    load_state,
    normalize_reference_keys,
    ours_to_reference_state,
    reference_to_ours,
)

ATOL = 1e-5


def from_hf(hf_model, ours):
    ref = normalize_reference_keys(hf_model.state_dict(), "transformers")
    state, unused = reference_to_ours(ref, ours.config)
    load_state(ours, state, strict=True, extra_unexpected=unused)
    return ours.eval()


def to_hf(ours, hf_model):
    hf_model.load_state_dict(ours_to_reference_state(ours), strict=True)
    return hf_model.eval()


def close(a, b, atol=ATOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err <= atol, f"max abs diff {err}"


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
@pytest.mark.parametrize("pad_boxes", [False, True])
def test_pretraining_outputs_match(cfg, direction, pad_boxes):
    hf = hf_twin(cfg)
    if direction == "hf_to_ours":
        ours = from_hf(hf, LxmertForPreTraining(cfg))
    else:
        torch.manual_seed(123)
        ours = LxmertForPreTraining(cfg).eval()
        hf = to_hf(ours, hf)
    batch = make_batch(cfg, pad_boxes=pad_boxes)
    with torch.no_grad():
        ref = hf(**hf_inputs(batch))
        ref_enc = hf.lxmert(**hf_inputs(batch))
        out = ours(**inputs_of(batch))  # no targets: every head dense
        sparse = ours(
            **inputs_of(batch),
            mlm_labels=batch["mlm_labels"],
            feat_targets=batch["feat_targets"],
            masked_boxes=batch["masked_boxes"],
        )
        ref_obj = hf.obj_predict_head(ref_enc.vision_output)
    close(out.language_output, ref_enc.language_output)
    close(out.vision_output, ref_enc.vision_output)
    close(out.pooled_output, ref_enc.pooled_output)
    close(out.mlm_logits, ref.prediction_logits)
    close(out.itm_logits, ref.cross_relationship_score)
    close(out.qa_logits, ref.question_answering_score)
    close(out.obj_logits, ref_obj["obj"])
    close(out.attr_logits, ref_obj["attr"])
    close(out.feat_pred, ref_obj["feat"])
    # Sparse heads = the dense ones at the selected positions.
    pos = batch["mlm_labels"] != -100
    close(sparse.mlm_logits, ref.prediction_logits[pos])
    sel = batch["masked_boxes"] & batch["visual_mask"].bool()
    close(sparse.feat_pred, ref_obj["feat"][sel])


def test_losses_match_transformers(cfg):
    """Where the definitions coincide (all boxes real; QA ignored for mismatched pairs) the total loss agrees."""
    hf = hf_twin(cfg)
    ours = from_hf(hf, LxmertForPreTraining(cfg))
    hf.config.visual_loss_normalizer = ours.objectives.visual_loss_normalizer
    hf.visual_loss_normalizer = ours.objectives.visual_loss_normalizer
    batch = make_batch(cfg, pad_boxes=False)
    with torch.no_grad():
        out = ours(**batch)
        ref = hf(
            **hf_inputs(batch),
            labels=batch["mlm_labels"],
            matched_label=batch["itm_labels"],
            ans=batch["qa_labels"],
            obj_labels={
                "obj": (batch["obj_labels"], batch["obj_conf"]),
                "attr": (batch["attr_labels"], batch["attr_conf"]),
                "feat": (batch["feat_targets"], batch["masked_boxes"].float()),
            },
        )
    assert set(out.losses) == {"mlm", "itm", "obj", "attr", "feat", "qa"}
    assert abs(out.loss.item() - ref.loss.item()) <= 1e-5 * max(1.0, abs(ref.loss.item()))
    # And task by task, switching the others off on both sides.
    with torch.no_grad():
        mlm_only = hf(**hf_inputs(batch), labels=batch["mlm_labels"]).loss
        itm_only = hf(**hf_inputs(batch), matched_label=batch["itm_labels"]).loss
        qa_only = hf(**hf_inputs(batch), ans=batch["qa_labels"]).loss
    assert abs(out.losses["mlm"].item() - mlm_only.item()) < 1e-5
    assert abs(out.losses["itm"].item() - itm_only.item()) < 1e-5
    assert abs(out.losses["qa"].item() - qa_only.item()) < 1e-5


@pytest.mark.parametrize("direction", ["hf_to_ours", "ours_to_hf"])
def test_vqa_matches_question_answering(cfg, direction):
    hf = hf_twin(cfg, transformers.LxmertForQuestionAnswering, num_qa_labels=13)
    if direction == "hf_to_ours":
        ours = from_hf(hf, LxmertForVQA(cfg, 13))
    else:
        ours = LxmertForVQA(cfg, 13).eval()
        hf = to_hf(ours, hf)
    batch = make_batch(cfg, pad_boxes=True)
    with torch.no_grad():
        ref = hf(**hf_inputs(batch), output_attentions=True)
        out = ours(**inputs_of(batch), output_attentions=True)
    close(out.logits, ref.question_answering_score)
    for a, b in zip(out.attentions.language, ref.language_attentions):
        close(a, b)
    for a, b in zip(out.attentions.vision, ref.vision_attentions):
        close(a, b)
    assert len(out.cross_attentions) == cfg.x_layers
    for a, b in zip(out.cross_attentions, ref.cross_encoder_attentions):
        close(a, b)


def test_bare_model_matches(cfg):
    hf = hf_twin(cfg, transformers.LxmertModel)
    ours = LxmertModel(cfg)
    ref = normalize_reference_keys(hf.state_dict(), "transformers")
    state, unused = reference_to_ours(ref, cfg)
    assert unused == []
    load_state(ours, state, strict=True)
    ours.eval()
    batch = make_batch(cfg, pad_boxes=True)
    with torch.no_grad():
        r = hf(**hf_inputs(batch))
        o = ours(**inputs_of(batch))
    close(o.language_output, r.language_output)
    close(o.vision_output, r.vision_output)
    close(o.pooled_output, r.pooled_output)
    # And back: our bare model's state loads into transformers' LxmertModel.
    hf2 = hf_twin(cfg, transformers.LxmertModel, seed=5)
    hf2.load_state_dict(ours_to_reference_state(ours), strict=True)
    with torch.no_grad():
        close(hf2(**hf_inputs(batch)).pooled_output, o.pooled_output)


def test_gradients_match_in_train_mode_without_dropout(cfg):
    """Backward parity: same loss gradient on every shared parameter (dropout off so both are deterministic)."""
    c = cfg.replace(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    hf = hf_twin(c).train()
    ours = from_hf(hf, LxmertForPreTraining(c)).train()
    batch = make_batch(c)
    ours(**inputs_of(batch), mlm_labels=batch["mlm_labels"], itm_labels=batch["itm_labels"]).loss.backward()
    hf(**hf_inputs(batch), labels=batch["mlm_labels"], matched_label=batch["itm_labels"]).loss.backward()
    g_ref = {k: p.grad for k, p in hf.named_parameters() if p.grad is not None}
    ref_layer = "lxmert.encoder.x_layers.1.visual_attention.att"
    shared = ours.lxmert.encoder.cross_layers[1].cross_attention  # one module, gradients from both directions
    for name in ("query", "key", "value"):
        close(getattr(shared, name).weight.grad, g_ref[f"{ref_layer}.{name}.weight"])
    close(ours.lxmert.embeddings.word_embeddings.weight.grad, g_ref["lxmert.embeddings.word_embeddings.weight"])
    close(ours.lxmert.visual_encoder.feat_fc.weight.grad, g_ref["lxmert.encoder.visn_fc.visn_fc.weight"])
