"""Model behaviour: masks for both streams, shapes, answer-head init, config validation, attention paths."""

from __future__ import annotations

import pytest
import torch
from model_helpers import inputs_of, make_batch, tiny_config

from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.modeling import LxmertConfig, LxmertForPreTraining, LxmertForVQA, LxmertModel, PretrainObjectives


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


def test_padded_boxes_do_not_change_real_outputs(cfg):
    """Same 4 real boxes alone and with 3 padded random boxes: every real output and every loss is unchanged."""
    torch.manual_seed(0)
    model = LxmertForPreTraining(cfg).eval()
    base = make_batch(cfg, b=4, n=4, pad_boxes=False)
    padded = {k: v.clone() for k, v in base.items()}
    extra = 3
    b = base["input_ids"].shape[0]
    for key, fill in (("visual_feats", None), ("visual_boxes", None), ("feat_targets", None)):
        padded[key] = torch.cat([base[key], torch.randn(b, extra, base[key].shape[-1]) * 50], 1)
    padded["visual_mask"] = torch.cat([base["visual_mask"], torch.zeros(b, extra, dtype=torch.long)], 1)
    padded["masked_boxes"] = torch.cat([base["masked_boxes"], torch.ones(b, extra, dtype=torch.bool)], 1)
    for key in ("obj_labels", "attr_labels"):
        padded[key] = torch.cat([base[key], torch.full((b, extra), -100)], 1)
    for key in ("obj_conf", "attr_conf"):
        padded[key] = torch.cat([base[key], torch.rand(b, extra)], 1)
    with torch.no_grad():
        o1, o2 = model(**base), model(**padded)
    torch.testing.assert_close(o2.vision_output[:, :4], o1.vision_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(o2.language_output, o1.language_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(o2.pooled_output, o1.pooled_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(o2.obj_logits[:, :4], o1.obj_logits, atol=1e-5, rtol=0)
    for name in ("mlm", "itm", "obj", "attr", "feat", "qa"):
        assert abs(o1.losses[name].item() - o2.losses[name].item()) < 1e-5, name
    # Without the visual mask the padded boxes DO change the outputs (the mask is what protects them).
    unmasked = dict(padded, visual_mask=None)
    with torch.no_grad():
        o3 = model(**inputs_of(unmasked))
    assert (o3.vision_output[:, :4] - o1.vision_output).abs().max() > 1e-3


def test_padded_text_does_not_change_real_outputs(cfg):
    torch.manual_seed(0)
    model = LxmertModel(cfg).eval()
    batch = make_batch(cfg, b=4, t=5, pad_text=False)
    longer = dict(inputs_of(batch))
    longer["input_ids"] = torch.cat([batch["input_ids"], torch.randint(1, 50, (4, 3))], 1)
    longer["attention_mask"] = torch.cat([batch["attention_mask"], torch.zeros(4, 3, dtype=torch.long)], 1)
    longer["token_type_ids"] = torch.zeros(4, 8, dtype=torch.long)
    with torch.no_grad():
        a, b = model(**inputs_of(batch)), model(**longer)
    torch.testing.assert_close(b.language_output[:, :5], a.language_output, atol=1e-5, rtol=0)
    torch.testing.assert_close(b.vision_output, a.vision_output, atol=1e-5, rtol=0)


def test_sdpa_and_explicit_softmax_paths_agree(cfg):
    torch.manual_seed(0)
    model = LxmertModel(cfg).eval()
    batch = make_batch(cfg, pad_boxes=True)
    with torch.no_grad():
        a = model(**inputs_of(batch))
        b = model(**inputs_of(batch), output_attentions=True)
    torch.testing.assert_close(a.vision_output, b.vision_output, atol=1e-5, rtol=0)
    probs = b.cross_attentions[-1]  # (B, heads, T, N)
    assert probs.shape == (4, cfg.num_attention_heads, 7, 6)
    torch.testing.assert_close(probs.sum(-1), torch.ones(probs.shape[:-1]))
    assert probs[3, :, :, 3:].abs().max() == 0  # row 3 has 3 padded boxes: no attention on them


def test_accepts_lxmert_batch_fields(cfg):
    """The typed batch's model_inputs()/pretrain_targets() are exactly our forward arguments."""
    batch = LxmertBatch(**make_batch(cfg))
    model = LxmertForPreTraining(cfg)
    out = model(**batch.model_inputs(), **batch.pretrain_targets())
    assert out.loss is not None and torch.isfinite(out.loss)
    out.loss.backward()
    assert model.lxmert.visual_encoder.box_fc.weight.grad is not None


def test_output_shapes_and_sparse_mlm(cfg):
    model = LxmertForPreTraining(cfg).eval()
    batch = make_batch(cfg)
    with torch.no_grad():
        out = model(**batch)
    m = int((batch["mlm_labels"] != -100).sum())
    k = int(batch["masked_boxes"].sum())
    assert out.mlm_logits.shape == (m, cfg.vocab_size)
    assert out.feat_pred.shape == (k, cfg.visual_feat_dim)
    assert out.itm_logits.shape == (4, 2)
    assert out.obj_logits.shape == (4, 6, cfg.num_object_labels)
    assert out.attr_logits.shape == (4, 6, cfg.num_attr_labels)
    assert out.qa_logits.shape == (4, cfg.num_qa_labels)
    dense = LxmertForPreTraining(cfg.replace(sparse_predictions=False)).eval()
    dense.load_state_dict(model.state_dict())
    with torch.no_grad():
        out2 = dense(**batch)
    assert out2.mlm_logits.shape == (4, 7, cfg.vocab_size)
    for name in out.losses:
        assert abs(out.losses[name].item() - out2.losses[name].item()) < 1e-5


def test_task_switches_and_weights(cfg):
    batch = make_batch(cfg)
    torch.manual_seed(0)
    full = LxmertForPreTraining(cfg).eval()
    c2 = PretrainObjectives(task_qa=False, visual_attr_loss=False, mlm_loss_weight=2.0, visual_loss_normalizer=1.0)
    part = LxmertForPreTraining(cfg, c2).eval()
    part.load_state_dict(
        {k: v for k, v in full.state_dict().items() if not k.startswith(("answer_head", "obj_head.decoders.attr"))}
    )
    with torch.no_grad():
        a, b = full(**batch), part(**batch)
    assert set(b.losses) == {"mlm", "itm", "obj", "feat"}
    assert b.qa_logits is None and b.attr_logits is None
    assert abs(b.losses["mlm"].item() - 2 * a.losses["mlm"].item()) < 1e-5
    assert abs(b.losses["obj"].item() * full.objectives.visual_loss_normalizer - a.losses["obj"].item()) < 1e-4
    assert abs(b.loss.item() - sum(v.item() for v in b.losses.values())) < 1e-5


def test_no_masked_tokens_gives_zero_not_nan(cfg):
    batch = make_batch(cfg)
    batch["mlm_labels"].fill_(-100)
    batch["masked_boxes"].zero_()
    batch["qa_labels"].fill_(-100)
    out = LxmertForPreTraining(cfg)(**batch)
    assert out.losses["mlm"].item() == 0 and out.losses["feat"].item() == 0 and out.losses["qa"].item() == 0
    out.loss.backward()


def test_embedding_padding_rows_never_train(cfg):
    model = LxmertForPreTraining(cfg)
    batch = make_batch(cfg)
    batch["input_ids"][:, -1] = 0
    model(**batch).loss.backward()
    emb = model.lxmert.embeddings
    # Position 0 ([CLS]) and token type 0 never train (original quirk, docs/faithful.md §3); the word table's row 0
    # still gets the tied MLM decoder's gradient, as in the original.
    for table in (emb.position_embeddings, emb.token_type_embeddings):
        assert table.weight.grad[0].abs().max() == 0
        assert table.weight[0].abs().max() == 0
    assert emb.position_embeddings.weight.grad[1].abs().max() > 0
    bare = LxmertModel(cfg)
    bare(**inputs_of(batch)).pooled_output.sum().backward()
    assert bare.embeddings.word_embeddings.weight.grad[0].abs().max() == 0


def test_vqa_loss_and_answer_head_init(cfg):
    torch.manual_seed(0)
    pre = LxmertForPreTraining(cfg)
    pre_answers = [f"a{i}" for i in range(cfg.num_qa_labels)]
    task_answers = ["a3", "zzz", "a0", "a8", "yes"]
    vqa = LxmertForVQA.from_pretraining(pre, 5, pre_answers, task_answers)
    w, b = pre.answer_head.classifier.weight, pre.answer_head.classifier.bias
    head = vqa.answer_head
    torch.testing.assert_close(head.classifier.weight[0], w[3])
    torch.testing.assert_close(head.classifier.weight[2], w[0])
    torch.testing.assert_close(head.classifier.bias[3], b[8])
    assert head.classifier.weight[1].abs().max() == 0 and head.classifier.bias[4] == 0
    torch.testing.assert_close(head.dense.weight, pre.answer_head.dense.weight)
    assert vqa.init_answer_head_from(pre.state_dict(), pre_answers, task_answers) == 3
    torch.testing.assert_close(vqa.lxmert.pooler.dense.weight, pre.lxmert.pooler.dense.weight)
    batch = make_batch(cfg)
    targets = torch.zeros(4, 5)
    targets[0, 0], targets[1, 2], targets[2, 4] = 1.0, 0.3, 0.9
    out = vqa(**inputs_of(batch), vqa_targets=targets)
    expect = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets, reduction="sum") / 4
    assert abs(out.loss.item() - expect.item()) < 1e-5  # mean over B*A, times A == sum / B
    with pytest.raises(ValueError, match="pretrain_answers"):
        vqa.init_answer_head_from(pre, pre_answers[:-1], task_answers)


def test_config_errors():
    with pytest.raises(ValueError, match="multiple of num_attention_heads"):
        LxmertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ValueError, match="unknown LxmertConfig field"):
        LxmertConfig.from_dict({"hiden_size": 3})
    with pytest.raises(ValueError, match="visual_loss_denominator"):
        PretrainObjectives(visual_loss_denominator="boxes")
    model = LxmertModel(tiny_config())
    batch = make_batch(tiny_config())
    batch["visual_feats"] = batch["visual_feats"][..., :10]
    with pytest.raises(ValueError, match="visual_feat_dim"):
        model(**inputs_of(batch))


def test_bf16_autocast_forward_backward(cfg):
    model = LxmertForPreTraining(cfg)
    batch = make_batch(cfg, pad_boxes=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
