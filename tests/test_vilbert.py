"""ViLBERT: the co-attention layer and the layer schedule against re-computations written here, the
vilbert-multi-task state-dict naming round trip (every tensor accounted for), padded boxes, conventions.

(Parity with the reference code itself -- vilbert/vilbert.py run on the same weights -- is measured outside
the test suite, the reference not being installable; docs/architectures.md has the numbers.)
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from model_helpers import inputs_of, make_batch, model_config

from lxmert_repro.modeling import PretrainObjectives, export_reference, load_model, save_model
from lxmert_repro.modeling.vilbert import VilbertConfig, VilbertForPreTraining, VilbertForVQA, VilbertModel
from lxmert_repro.modeling.vilbert.pretraining import region_kl_loss, top_class_targets

torch.set_num_threads(1)


def close(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.fixture(scope="module")
def cfg() -> VilbertConfig:
    return model_config("vilbert_tiny")


@pytest.fixture(scope="module")
def batch(cfg):
    return make_batch(cfg, pad_boxes=True)


def noisy(model):
    with torch.no_grad():  # no zero biases / unit LayerNorms left: every tensor matters
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_base_schedule_is_the_reference_one():
    """bert_base_6layer_6conect.json: text 0-5, co 0; (text 6, vision 0, co 1) .. (text 10, vision 4, co 5);
    vision 5, text 11."""
    want = [("text", i) for i in range(6)] + [("co", 0)]
    for k in range(1, 6):
        want += [("text", 5 + k), ("vision", k - 1), ("co", k)]
    want += [("vision", 5), ("text", 11)]
    assert VilbertConfig().schedule() == want
    c = VilbertConfig()
    assert (c.num_hidden_layers, c.v_num_hidden_layers, len(c.v_biattention_id)) == (12, 6, 6)
    assert (c.v_hidden_size, c.v_num_attention_heads, c.bi_hidden_size // c.bi_num_attention_heads) == (1024, 8, 128)


def _linear(x, lin):
    return x @ lin.weight.T + lin.bias


def _ln(x, ln):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _attend(q, k, v, heads, key_keep):
    """Multi-head attention written out: split heads, softmax(q k^T / sqrt(d) with padded keys dropped) v."""
    b, tq, h = q.shape
    d = h // heads
    split = lambda x: x.view(b, x.shape[1], heads, d).transpose(1, 2)
    scores = split(q) @ split(k).transpose(-1, -2) / math.sqrt(d)  # (B, heads, Tq, Tk)
    scores = scores.masked_fill(~key_keep[:, None, None, :], float("-inf"))
    return (scores.softmax(-1) @ split(v)).transpose(1, 2).reshape(b, tq, h)


def _ffn(x, ffn):
    return _ln(_linear(F.gelu(_linear(x, ffn.intermediate)), ffn.output) + x, ffn.layer_norm)


def _co_layer(layer, text, t_keep, vision, v_keep, heads):
    va, ta = layer.vision_attn, layer.text_attn
    t_ctx = _attend(_linear(text, ta.query), _linear(vision, va.key), _linear(vision, va.value), heads, v_keep)
    v_ctx = _attend(_linear(vision, va.query), _linear(text, ta.key), _linear(text, ta.value), heads, t_keep)
    text = _ln(_linear(t_ctx, layer.text_output.dense) + text, layer.text_output.layer_norm)
    vision = _ln(_linear(v_ctx, layer.vision_output.dense) + vision, layer.vision_output.layer_norm)
    return _ffn(text, layer.text_ffn), _ffn(vision, layer.vision_ffn)


def _bert_layer(layer, x, keep, heads):
    a = layer.attention.attn
    ctx = _attend(_linear(x, a.query), _linear(x, a.key), _linear(x, a.value), heads, keep)
    x = _ln(_linear(ctx, layer.attention.output.dense) + x, layer.attention.output.layer_norm)
    return _ffn(x, layer.ffn)


def test_co_attention_layer_against_a_recomputation(cfg):
    torch.manual_seed(0)
    model = noisy(VilbertModel(cfg))
    layer = model.co_layers[0]
    g = torch.Generator().manual_seed(1)
    text, vision = torch.randn(3, 5, cfg.hidden_size, generator=g), torch.randn(3, 4, cfg.v_hidden_size, generator=g)
    t_keep = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]).bool()
    v_keep = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]]).bool()
    from lxmert_repro.modeling.attention import additive_mask

    with torch.no_grad():
        t_out, v_out, _ = layer(text, additive_mask(t_keep, text.dtype), vision, additive_mask(v_keep, vision.dtype))
        t_want, v_want = _co_layer(layer, text, t_keep, vision, v_keep, cfg.bi_num_attention_heads)
    close(t_out, t_want)
    close(v_out, v_want)
    assert t_out.shape == text.shape and v_out.shape == vision.shape


def test_encoder_follows_the_schedule(cfg, batch):
    """The tiny config's order written out: text 0, 1, co 0, text 2, vision 0, co 1, vision 1, 2, text 3."""
    torch.manual_seed(2)
    model = noisy(VilbertModel(cfg))
    b, n, _ = batch["visual_feats"].shape
    with torch.no_grad():
        out = model(**inputs_of(batch))
        m = batch["visual_mask"].float()
        mean = (batch["visual_feats"] * m[..., None]).sum(1, keepdim=True) / m.sum(1)[:, None, None]
        bx = batch["visual_boxes"]
        loc = torch.cat([bx, ((bx[..., 2] - bx[..., 0]) * (bx[..., 3] - bx[..., 1]))[..., None]], -1)
        feats = torch.cat([mean, batch["visual_feats"]], 1)
        locs = torch.cat([torch.tensor([0.0, 0.0, 1.0, 1.0, 1.0]).expand(b, 1, 5), loc], 1)
        ie = model.image_embeddings
        vision = _ln(_linear(feats, ie.feat_fc) + _linear(locs, ie.loc_fc), ie.layer_norm)
        e = model.embeddings
        t = batch["input_ids"].shape[1]
        text = _ln(
            e.word_embeddings.weight[batch["input_ids"]]
            + e.position_embeddings.weight[:t]
            + e.token_type_embeddings.weight[batch["token_type_ids"]],
            e.layer_norm,
        )
        t_keep = batch["attention_mask"].bool()
        v_keep = torch.cat([torch.ones(b, 1, dtype=torch.bool), batch["visual_mask"].bool()], 1)
        th, vh = cfg.num_attention_heads, cfg.v_num_attention_heads
        for i in (0, 1):
            text = _bert_layer(model.text_layers[i], text, t_keep, th)
        text, vision = _co_layer(model.co_layers[0], text, t_keep, vision, v_keep, cfg.bi_num_attention_heads)
        text = _bert_layer(model.text_layers[2], text, t_keep, th)
        vision = _bert_layer(model.vision_layers[0], vision, v_keep, vh)
        text, vision = _co_layer(model.co_layers[1], text, t_keep, vision, v_keep, cfg.bi_num_attention_heads)
        for j in (1, 2):
            vision = _bert_layer(model.vision_layers[j], vision, v_keep, vh)
        text = _bert_layer(model.text_layers[3], text, t_keep, th)
        t_pool = torch.relu(_linear(text[:, 0], model.text_pooler.dense))
        v_pool = torch.relu(_linear(vision[:, 0], model.vision_pooler.dense))
    close(out.language_output, text)
    close(out.global_output, vision[:, 0])
    close(out.vision_output, vision[:, 1:])
    close(out.pooled_output, t_pool * v_pool)


def test_padded_boxes_do_not_change_real_outputs(cfg, batch):
    torch.manual_seed(3)
    model = noisy(VilbertModel(cfg))
    row = {k: v[3:4] for k, v in inputs_of(batch).items()}  # 3 padded boxes
    real = int(row["visual_mask"].sum())
    trimmed = dict(
        row,
        visual_feats=row["visual_feats"][:, :real],
        visual_boxes=row["visual_boxes"][:, :real],
        visual_mask=row["visual_mask"][:, :real],
    )
    with torch.no_grad():
        a, b = model(**row), model(**trimmed)
    close(a.vision_output[:, :real], b.vision_output)
    close(a.language_output, b.language_output)
    close(a.pooled_output, b.pooled_output)


def _reference_named_state(cfg: VilbertConfig, g: torch.Generator) -> dict[str, torch.Tensor]:
    """A BertForMultiModalPreTraining state dict as vilbert/vilbert.py names and shapes it (written out here)."""
    h, vh, bh, ti, vi = (
        cfg.hidden_size,
        cfg.v_hidden_size,
        cfg.bi_hidden_size,
        cfg.intermediate_size,
        cfg.v_intermediate_size,
    )
    s: dict[str, torch.Tensor] = {}

    def lin(name, out, inp):
        s[name + ".weight"], s[name + ".bias"] = torch.randn(out, inp, generator=g), torch.randn(out, generator=g)

    def ln(name, size):
        s[name + ".weight"], s[name + ".bias"] = torch.randn(size, generator=g), torch.randn(size, generator=g)

    for table, rows in (
        ("word_embeddings", cfg.vocab_size),
        ("position_embeddings", cfg.max_position_embeddings),
        ("token_type_embeddings", cfg.type_vocab_size),
    ):
        s[f"bert.embeddings.{table}.weight"] = torch.randn(rows, h, generator=g)
    ln("bert.embeddings.LayerNorm", h)
    lin("bert.v_embeddings.image_embeddings", vh, cfg.visual_feat_dim)
    lin("bert.v_embeddings.image_location_embeddings", vh, 5)
    ln("bert.v_embeddings.LayerNorm", vh)
    for group, count, width, inter in (
        ("layer", cfg.num_hidden_layers, h, ti),
        ("v_layer", cfg.v_num_hidden_layers, vh, vi),
    ):
        for i in range(count):
            p = f"bert.encoder.{group}.{i}."
            for x in ("query", "key", "value"):
                lin(p + "attention.self." + x, width, width)
            lin(p + "attention.output.dense", width, width)
            ln(p + "attention.output.LayerNorm", width)
            lin(p + "intermediate.dense", inter, width)
            lin(p + "output.dense", width, inter)
            ln(p + "output.LayerNorm", width)
    for k in range(len(cfg.v_biattention_id)):
        p = f"bert.encoder.c_layer.{k}."
        for x in ("query1", "key1", "value1"):
            lin(p + "biattention." + x, bh, vh)
        for x in ("query2", "key2", "value2"):
            lin(p + "biattention." + x, bh, h)
        lin(p + "biOutput.dense1", vh, bh), ln(p + "biOutput.LayerNorm1", vh), lin(p + "biOutput.q_dense1", vh, bh)
        lin(p + "biOutput.dense2", h, bh), ln(p + "biOutput.LayerNorm2", h), lin(p + "biOutput.q_dense2", h, bh)
        lin(p + "v_intermediate.dense", vi, vh), lin(p + "v_output.dense", vh, vi), ln(p + "v_output.LayerNorm", vh)
        lin(p + "t_intermediate.dense", ti, h), lin(p + "t_output.dense", h, ti), ln(p + "t_output.LayerNorm", h)
    lin("bert.t_pooler.dense", bh, h)
    lin("bert.v_pooler.dense", bh, vh)
    s["cls.predictions.bias"] = torch.randn(cfg.vocab_size, generator=g)
    lin("cls.predictions.transform.dense", h, h)
    ln("cls.predictions.transform.LayerNorm", h)
    s["cls.predictions.decoder.weight"] = s["bert.embeddings.word_embeddings.weight"]  # tied
    lin("cls.bi_seq_relationship", 2, bh)
    lin("cls.imagePredictions.transform.dense", vh, vh)
    ln("cls.imagePredictions.transform.LayerNorm", vh)
    lin("cls.imagePredictions.decoder", cfg.num_object_labels, vh)
    return s


def test_reference_naming_round_trip_accounts_for_every_tensor(cfg, tmp_path):
    ref = _reference_named_state(cfg, torch.Generator().manual_seed(4))
    torch.save(ref, tmp_path / "pytorch_model.bin")
    model = load_model(tmp_path / "pytorch_model.bin", config=cfg)  # strict: nothing missing or unexpected
    assert type(model) is VilbertForPreTraining and model.load_report.ok
    unused = sorted(k for k in ref if ".q_dense" in k)
    assert model.load_report.dropped == unused  # never read by the reference's forward
    own = model.state_dict()
    assert torch.equal(
        own["vilbert.co_layers.1.vision_attn.query.weight"], ref["bert.encoder.c_layer.1.biattention.query1.weight"]
    )
    assert torch.equal(
        own["vilbert.co_layers.0.text_output.dense.bias"], ref["bert.encoder.c_layer.0.biOutput.dense2.bias"]
    )
    export_reference(model, tmp_path / "back.bin")
    back = torch.load(tmp_path / "back.bin")
    assert set(back) == set(ref)
    for k, v in ref.items():
        if k in unused:
            assert not back[k].any() and back[k].shape == v.shape, k
        else:
            assert torch.equal(back[k], v), k


def test_reference_region_head_background_first_is_reordered_to_ours(cfg, batch, tmp_path):
    """vilbert-multi-task's masked-region head (``cls.imagePredictions.decoder``, v_target_size = 1601) has the
    background in row 0 and class c of the detector in row c + 1 (Visual Genome's ``__background__`` first); ours
    has class c in column c and the background last (column C), as the store and ``obj_labels``. Import moves the
    rows, export moves them back: the file round-trips bit for bit and our logit of class c is the reference's."""
    ref = _reference_named_state(cfg, torch.Generator().manual_seed(11))
    rows = cfg.num_object_labels  # C + 1
    # distinguishable rows: random weight rows, and row r's bias is r + 0.5
    ref["cls.imagePredictions.decoder.bias"] = torch.arange(rows, dtype=torch.float32) + 0.5
    torch.save(ref, tmp_path / "pytorch_model.bin")
    model = load_model(tmp_path / "pytorch_model.bin", config=cfg).eval()
    assert type(model) is VilbertForPreTraining and model.load_report.ok
    dec = model.region_head.decoder
    ref_w, ref_b = ref["cls.imagePredictions.decoder.weight"], ref["cls.imagePredictions.decoder.bias"]
    ref_row = [c + 1 for c in range(rows - 1)] + [0]  # our column j -> the reference's row
    for j, r in enumerate(ref_row):
        assert torch.equal(dec.weight[j], ref_w[r]) and dec.bias[j].item() == r + 0.5, j
    # logits: ours at class c == the reference head's (written out from the reference tensors) at its class c
    with torch.no_grad():
        out = model(**inputs_of(batch))
        v = out.vision_output  # (B, N, Hv): the regions, the global token excluded
        hid = F.gelu(
            v @ ref["cls.imagePredictions.transform.dense.weight"].T + ref["cls.imagePredictions.transform.dense.bias"]
        )
        mu, var = hid.mean(-1, keepdim=True), hid.var(-1, unbiased=False, keepdim=True)
        hid = (hid - mu) / torch.sqrt(var + cfg.layer_norm_eps)
        hid = (
            hid * ref["cls.imagePredictions.transform.LayerNorm.weight"]
            + ref["cls.imagePredictions.transform.LayerNorm.bias"]
        )
        reference_logits = hid @ ref_w.T + ref_b  # (B, N, C + 1), background first
    for c in range(rows - 1):
        close(out.region_logits[..., c], reference_logits[..., c + 1])
    close(out.region_logits[..., rows - 1], reference_logits[..., 0])  # the background
    export_reference(model, tmp_path / "back.bin")
    back = torch.load(tmp_path / "back.bin")
    for k in ("cls.imagePredictions.decoder.weight", "cls.imagePredictions.decoder.bias"):
        assert torch.equal(back[k], ref[k]), k
    # and through our own format: saved and reloaded, the columns stay ours
    save_model(model, tmp_path / "ours")
    again = load_model(tmp_path / "ours")
    assert torch.equal(again.region_head.decoder.weight, dec.weight)
    export_reference(again, tmp_path / "back2.bin")
    assert torch.equal(torch.load(tmp_path / "back2.bin")["cls.imagePredictions.decoder.bias"], ref_b)


def test_reference_vqa_checkpoint_keeps_its_answer_head_and_names_other_heads(cfg, tmp_path):
    g = torch.Generator().manual_seed(5)
    ref = _reference_named_state(cfg, g)
    bh = cfg.bi_hidden_size
    for name, out, inp in (
        ("vil_prediction.logit_fc.0", 2 * bh, bh),
        ("vil_prediction.logit_fc.3", 7, 2 * bh),
        ("vil_logit", 1, bh),
        ("vil_binary_prediction.logit_fc.0", 2 * bh, 2 * bh),
    ):
        ref[name + ".weight"], ref[name + ".bias"] = torch.randn(out, inp, generator=g), torch.randn(out, generator=g)
    ref["vil_prediction.logit_fc.2.weight"], ref["vil_prediction.logit_fc.2.bias"] = (
        torch.randn(2 * bh),
        torch.randn(2 * bh),
    )
    torch.save(ref, tmp_path / "vqa.bin")
    model = load_model(tmp_path / "vqa.bin", config=cfg)
    assert type(model) is VilbertForVQA and model.num_answers == 7 and model.load_report.ok
    assert (
        "vil_logit.weight" in model.load_report.dropped
        and "cls.bi_seq_relationship.weight" in model.load_report.dropped
    )
    assert torch.equal(model.answer_head.classifier.weight, ref["vil_prediction.logit_fc.3.weight"])
    save_model(model, tmp_path / "ours")
    assert type(load_model(tmp_path / "ours")) is VilbertForVQA


def test_reference_nlvr2_head_is_our_pair_head(cfg, tmp_path):
    """vilbert-multi-task's NLVR2 head (vil_binary_prediction: SimpleClassifier(2 Hb, 2 Hb, 2) over the two images'
    pooled vectors) is NLVR2Model's pair head: a file with it (and no VQA head) imports as our NLVR2 model, other
    task heads dropped by name, and exports back to the same names."""
    from lxmert_repro.modeling import NLVR2Model

    g = torch.Generator().manual_seed(7)
    ref = {k: v for k, v in _reference_named_state(cfg, g).items() if not k.startswith("cls.")}
    hb = 2 * cfg.bi_hidden_size
    for name, shape in (
        ("vil_binary_prediction.logit_fc.0.weight", (hb, hb)),
        ("vil_binary_prediction.logit_fc.0.bias", (hb,)),
        ("vil_binary_prediction.logit_fc.2.weight", (hb,)),
        ("vil_binary_prediction.logit_fc.2.bias", (hb,)),
        ("vil_binary_prediction.logit_fc.3.weight", (2, hb)),
        ("vil_binary_prediction.logit_fc.3.bias", (2,)),
        ("vil_logit.weight", (1, cfg.bi_hidden_size)),
    ):
        ref[name] = torch.randn(shape, generator=g)
    torch.save(ref, tmp_path / "nlvr2.bin")
    model = load_model(tmp_path / "nlvr2.bin", config=cfg)
    assert type(model) is NLVR2Model and model.load_report.ok and "vil_logit.weight" in model.load_report.dropped
    assert torch.equal(model.pair_head.dense.weight, ref["vil_binary_prediction.logit_fc.0.weight"])
    assert torch.equal(model.pair_head.layer_norm.bias, ref["vil_binary_prediction.logit_fc.2.bias"])
    assert torch.equal(model.pair_head.classifier.weight, ref["vil_binary_prediction.logit_fc.3.weight"])
    export_reference(model, tmp_path / "back.bin")
    back = torch.load(tmp_path / "back.bin")
    assert set(back) == set(ref) - {"vil_logit.weight"}  # the other task head was dropped
    for k, v in back.items():
        if ".q_dense" not in k:
            assert torch.equal(v, ref[k]), k


def test_matching_class_0_is_match_in_the_reference_head(cfg, batch):
    torch.manual_seed(6)
    model = VilbertForPreTraining(cfg).eval()
    with torch.no_grad():
        model.itm_head.weight.zero_()
        model.itm_head.bias.copy_(torch.tensor([5.0, -5.0]))
        ones = torch.ones(batch["input_ids"].shape[0], dtype=torch.long)
        matched, swapped = model(**inputs_of(batch), itm_labels=ones), model(**inputs_of(batch), itm_labels=1 - ones)
    assert matched.losses["itm"] < 1e-3 and swapped.losses["itm"] > 9


def test_region_kl_loss_and_top_class_fallback():
    logits = torch.tensor([[[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]]])  # (1, 2, 3)
    target = torch.tensor([[[0.7, 0.2, 0.1], [0.0, 0.0, 1.0]]])
    masked = torch.tensor([[True, False]])
    p = torch.tensor([2.0, 0.0, -1.0]).softmax(-1)
    want = sum(t * (math.log(t) - math.log(q)) for t, q in zip([0.7, 0.2, 0.1], p.tolist()))
    assert region_kl_loss(logits, target, masked).item() == pytest.approx(want, rel=1e-6)
    fallback = top_class_targets(torch.tensor([[2, -100]]), torch.tensor([[0.8, 0.5]]), 3)
    close(fallback, torch.tensor([[[0.0, 0.0, 0.8], [0.0, 0.0, 0.0]]]))


def test_pretraining_objectives_and_fallback_target(cfg, batch):
    model = VilbertForPreTraining(cfg, PretrainObjectives(region_kl_loss_weight=2.0))
    assert model.objectives.requested() == {"mlm", "itm", "region_kl"}
    out = model.eval()(**batch)
    assert set(out.losses) == {"mlm", "itm", "region_kl"}
    masked = batch["masked_boxes"] & batch["visual_mask"].bool()
    target = top_class_targets(batch["obj_labels"], batch["obj_conf"], cfg.num_object_labels)
    close(out.losses["region_kl"], 2.0 * region_kl_loss(out.region_logits, target, masked))


def test_cli_converts_reference_file_to_ours_and_back(cfg, tmp_path, capsys):
    from lxmert_repro.cli.convert import main as convert_main

    ref = _reference_named_state(cfg, torch.Generator().manual_seed(7))
    torch.save(ref, tmp_path / "ref.bin")
    cfg_dir = Path(__file__).parents[1] / "lxmert_repro/configs/model/vilbert_tiny.yaml"
    assert convert_main([str(tmp_path / "ref.bin"), str(tmp_path / "ours"), "--config", str(cfg_dir)]) == 0
    assert "dropped (not this model's)" in capsys.readouterr().out
    assert convert_main([str(tmp_path / "ours"), str(tmp_path / "back.bin"), "--to", "reference"]) == 0
    back = torch.load(tmp_path / "back.bin")
    assert set(back) == set(ref) and torch.equal(
        back["cls.imagePredictions.decoder.weight"], ref["cls.imagePredictions.decoder.weight"]
    )


def kl_by_hand(logits, ids, probs, masked) -> float:
    """vilbert.py (visual_target 0): KLDivLoss(log_softmax(prediction), target) summed over the classes and the masked
    boxes, divided by their number; target = the stored probabilities at their class ids, 0 elsewhere."""
    total, count = 0.0, 0
    for i, j in masked.nonzero().tolist():
        logq = torch.log_softmax(logits[i, j].double(), -1).tolist()
        columns = range(len(logq)) if ids is None else ids[i, j].tolist()
        total += sum(p * (math.log(p) - logq[c]) for c, p in zip(columns, probs[i, j].tolist()) if p > 0)
        count += 1
    return total / count


@pytest.mark.parametrize("full", [False, True])
def test_region_kl_with_stored_class_distributions_by_hand(cfg, batch, full):
    torch.manual_seed(3)
    model = noisy(VilbertForPreTraining(cfg))
    b, n = batch["visual_mask"].shape
    C = cfg.num_object_labels
    g = torch.Generator().manual_seed(4)
    if full:
        ids, probs = None, torch.rand(b, n, C, generator=g).softmax(-1)  # (B, N, C), every class
    else:  # the top 3 classes of each box, most probable first; sums below 1
        ids = torch.stack([torch.randperm(C, generator=g)[:3] for _ in range(b * n)]).reshape(b, n, 3)
        probs = torch.tensor([0.5, 0.2, 0.1]).expand(b, n, 3) * torch.rand(b, n, 1, generator=g)
    probs = probs * batch["visual_mask"][..., None]  # padded boxes: zeros, as collated
    with torch.no_grad():
        out = model(**batch, region_class_probs=probs, region_class_ids=ids)
        fallback = model(**batch)
    masked = batch["masked_boxes"] & batch["visual_mask"].bool()
    want = kl_by_hand(out.region_logits, ids, probs, masked)
    assert out.losses["region_kl"].item() == pytest.approx(want, rel=1e-5)
    assert abs(out.losses["region_kl"].item() - fallback.losses["region_kl"].item()) > 0.05
    if full:
        with pytest.raises(ValueError, match=rf"region_class_probs: {C + 1} classes per box .* num_object_labels={C}"):
            model(**batch, region_class_probs=torch.cat([probs, probs[..., :1]], -1))
    else:
        with pytest.raises(ValueError, match=rf"region_class_ids: class {C} .* num_object_labels={C}"):
            model(**batch, region_class_probs=probs, region_class_ids=ids.clamp(max=C - 1) + 1)


def test_top_class_fallback_is_logged_once(cfg, batch, caplog, monkeypatch):
    monkeypatch.setattr(VilbertForPreTraining, "_warned_fallback", False)
    model = VilbertForPreTraining(cfg).eval()
    b, n = batch["visual_mask"].shape
    probs = torch.zeros(b, n, cfg.num_object_labels)
    with caplog.at_level(logging.INFO, logger="lxmert_repro.modeling.vilbert.pretraining"), torch.no_grad():
        model(**batch, region_class_probs=probs)  # the stored distributions: no fallback, no message
        assert not caplog.records
        model(**batch)
        model(**batch)
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "top class with its confidence" in said[0] and "class_distribution_topk" in said[0]


def test_pretraining_batches_from_a_store_with_class_distributions(cfg, tmp_path):
    """Store -> dataset -> collator -> model: the region KL target is the stored distribution; LXMERT, which has no
    use for it, takes the same batch."""
    from data_helpers import CLS, MASK, PAD, SEP, make_records, make_store

    from lxmert_repro.data.pretrain_dataset import PretrainCollator, PretrainDataset
    from lxmert_repro.features.store import ClassDist
    from lxmert_repro.modeling import LxmertForPreTraining

    make_store(tmp_path / "s", feat_dim=cfg.visual_feat_dim, class_dist=ClassDist(4, False), num_classes=11)
    records = make_records()
    for r in records:  # word ids inside the tiny vocabulary
        r["input_ids"] = [CLS] + [20 + int(r["image_id"][3:])] * (len(r["input_ids"]) - 2) + [SEP]
    ds = PretrainDataset(
        records,
        tmp_path / "s",
        pad_token_id=PAD,
        cls_token_id=CLS,
        sep_token_id=SEP,
        mask_token_id=MASK,
        vocab_size=cfg.vocab_size,
        obj_mask_prob=0.5,
        answers=None,
        seed=2,
    )
    batch = PretrainCollator(pad_token_id=PAD)([ds[i] for i in range(0, 30, 5)])
    torch.manual_seed(0)
    model = noisy(VilbertForPreTraining(cfg))
    with torch.no_grad():
        out = model(**batch.model_inputs(), **batch.pretrain_targets())
    masked = batch.masked_boxes & batch.visual_mask.bool()
    assert masked.sum() > 3
    want = kl_by_hand(out.region_logits, batch.region_class_ids, batch.region_class_probs, masked)
    assert out.losses["region_kl"].item() == pytest.approx(want, rel=1e-5)
    objectives = PretrainObjectives(visual_obj_loss=False, visual_attr_loss=False, task_qa=False)  # store ids: 0..1599
    lxmert = LxmertForPreTraining(model_config("lxmert_tiny"), objectives)
    assert torch.isfinite(lxmert(**batch.model_inputs(), **batch.pretrain_targets()).loss)


def test_a_run_gives_vilbert_the_detector_classes_and_the_background(tmp_path):
    """From a store of C detector classes, a pretraining run builds ViLBERT's region head over C + 1 columns (the
    store's class distributions: classes, then the background; the reference's 1601 for Visual Genome's 1600),
    LXMERT's object head over C; a full store of C + 1 columns then trains without a shape error."""
    from types import SimpleNamespace

    from data_helpers import CLS, MASK, PAD, SEP, make_records, make_store
    from training_helpers import compose

    from lxmert_repro.data.pretrain_dataset import PretrainCollator, PretrainDataset
    from lxmert_repro.features.store import ClassDist, FeatureStore, FeatureStoreWriter
    from lxmert_repro.training.models import build_pretrain_model

    make_store(tmp_path / "s", feat_dim=24, class_dist=ClassDist(4, full=True), num_classes=4)
    with FeatureStoreWriter(tmp_path / "s", feat_dim=24) as w:  # the detector's classes, as extraction records
        w.set_metadata(object_classes=["circle", "rectangle", "triangle"])
    store = FeatureStore(tmp_path / "s")
    data = SimpleNamespace(tokenizer=list(range(99)), store=store, answers=None)
    vilbert = build_pretrain_model(compose("pretrain", ["model=vilbert_tiny"]), data)
    assert vilbert.config.num_object_labels == 4 and vilbert.region_head.decoder.out_features == 4
    lxmert = build_pretrain_model(compose("pretrain", ["model=lxmert_tiny"]), data)
    assert lxmert.config.num_object_labels == 3
    records = make_records()
    for r in records:  # word ids inside the tiny vocabulary
        r["input_ids"] = [CLS] + [20 + int(r["image_id"][3:])] * (len(r["input_ids"]) - 2) + [SEP]
    ds = PretrainDataset(
        records,
        store,
        pad_token_id=PAD,
        cls_token_id=CLS,
        sep_token_id=SEP,
        mask_token_id=MASK,
        vocab_size=99,
        obj_mask_prob=0.5,
        seed=2,
    )
    batch = PretrainCollator(pad_token_id=PAD)([ds[i] for i in range(0, 30, 5)])
    assert batch.region_class_probs.shape[-1] == 4 and batch.region_class_ids is None
    with torch.no_grad():
        out = vilbert.eval()(**batch.model_inputs(), **batch.pretrain_targets())
    masked = batch.masked_boxes & batch.visual_mask.bool()
    want = kl_by_hand(out.region_logits, None, batch.region_class_probs, masked)
    assert out.losses["region_kl"].item() == pytest.approx(want, rel=1e-5)
