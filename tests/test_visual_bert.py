"""VisualBERT against transformers' VisualBert classes (random weights, fp32, eval, padding in both streams),
checkpoint import/export both ways, the matching-class convention, and the box ablation."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from model_helpers import inputs_of, make_batch, model_config

from lxmert_repro.modeling import (
    CheckpointError,
    PretrainObjectives,
    build_model,
    export_transformers,
    load_model,
    save_model,
)
from lxmert_repro.modeling.visual_bert import (
    VisualBertConfig,
    VisualBertForPreTraining,
    VisualBertForVQA,
    VisualBertModel,
)
from lxmert_repro.modeling.visual_bert.io import config_to_transformers

ATOL = 1e-5


@pytest.fixture(scope="module")
def cfg() -> VisualBertConfig:
    return model_config("visualbert_tiny")


@pytest.fixture(scope="module")
def batch(cfg):
    return make_batch(cfg, pad_boxes=True)  # text and boxes padded


def close(a, b):
    torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


def hf_model(cls, cfg, seed=0, num_labels=None):
    torch.manual_seed(seed)
    tcfg = config_to_transformers(cfg, num_labels)
    tcfg.return_dict = True
    model = cls(tcfg).eval()
    with torch.no_grad():  # no zero rows / biases left from init: every tensor must be copied right
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return model


def via_transformers_dir(hf, tmp_path):
    hf.save_pretrained(tmp_path / "hf")
    return load_model(tmp_path / "hf").eval()


def hf_inputs(batch):
    return dict(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        visual_embeds=batch["visual_feats"],
        visual_attention_mask=batch["visual_mask"],
    )


def test_encoder_matches_transformers(cfg, batch, tmp_path):
    hf = hf_model(transformers.VisualBertModel, cfg)
    ours = via_transformers_dir(hf, tmp_path)
    assert type(ours) is VisualBertModel and ours.load_report.ok
    t = batch["input_ids"].shape[1]
    with torch.no_grad():
        ref = hf(**hf_inputs(batch), output_attentions=True)
        out = ours(**inputs_of(batch), output_attentions=True)
    close(out.language_output, ref.last_hidden_state[:, :t])
    close(out.vision_output, ref.last_hidden_state[:, t:])
    close(out.pooled_output, ref.pooler_output)
    for a, b in zip(out.attentions, ref.attentions, strict=True):
        close(a, b)


def test_pretraining_matches_transformers_outputs_and_losses(cfg, batch, tmp_path):
    hf = hf_model(transformers.VisualBertForPreTraining, cfg, seed=1)
    ours = via_transformers_dir(hf, tmp_path)
    assert type(ours) is VisualBertForPreTraining and ours.load_report.ok
    dense = VisualBertForPreTraining(cfg.replace(sparse_predictions=False)).eval()
    dense.load_state_dict(ours.state_dict())
    b, t = batch["input_ids"].shape
    n = batch["visual_feats"].shape[1]
    # transformers takes MLM labels over the whole sequence and 0 = match; ours: text only and 1 = match.
    labels = torch.cat([batch["mlm_labels"], torch.full((b, n), -100)], dim=1)
    with torch.no_grad():
        ref = hf(**hf_inputs(batch), labels=labels, sentence_image_labels=1 - batch["itm_labels"])
        out = dense(**batch)
        sparse = ours(**batch)
    close(out.mlm_logits, ref.prediction_logits[:, :t])
    close(out.itm_logits, ref.seq_relationship_logits.flip(-1))
    close(out.loss, ref.loss)
    close(sparse.loss, ref.loss)
    close(sparse.mlm_logits, ref.prediction_logits[:, :t][batch["mlm_labels"] != -100])
    assert set(out.losses) == {"mlm", "itm"}


def test_matching_convention_class_0_is_match_in_the_reference(cfg, batch):
    """A head that favours reference class 0 must give matched pairs (our label 1) the lower loss."""
    torch.manual_seed(0)
    model = VisualBertForPreTraining(cfg).eval()
    with torch.no_grad():
        model.itm_head.weight.zero_()
        model.itm_head.bias.copy_(torch.tensor([5.0, -5.0]))
        matched = model(**inputs_of(batch), itm_labels=torch.ones(batch["input_ids"].shape[0], dtype=torch.long))
        swapped = model(**inputs_of(batch), itm_labels=torch.zeros(batch["input_ids"].shape[0], dtype=torch.long))
    assert matched.losses["itm"] < 1e-3 < 9 < swapped.losses["itm"]
    assert (matched.itm_logits.argmax(-1) == 1).all()


@pytest.mark.parametrize("vqa_loss", ["kl", "bce"])
def test_vqa_matches_transformers_question_answering(cfg, batch, tmp_path, vqa_loss):
    hf = hf_model(transformers.VisualBertForQuestionAnswering, cfg, seed=2, num_labels=5)
    ours = via_transformers_dir(hf, tmp_path)
    assert type(ours) is VisualBertForVQA and ours.num_answers == 5
    ours.config = ours.config.replace(vqa_loss=vqa_loss)
    targets = torch.rand(batch["input_ids"].shape[0], 5, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = hf(**hf_inputs(batch))
        ref_loss = hf(**hf_inputs(batch), labels=targets)  # (its logits come back log-softmaxed with labels)
        out = ours(**inputs_of(batch), vqa_targets=targets)
    close(out.logits, ref.logits)
    close(out.logits.log_softmax(-1), ref_loss.logits)
    if vqa_loss == "kl":
        close(out.loss, ref_loss.loss)
    else:
        close(out.loss, torch.nn.functional.binary_cross_entropy_with_logits(ref.logits, targets) * 5)


@pytest.mark.parametrize("role", ["encoder", "pretraining", "vqa"])
def test_export_and_our_format_round_trip(cfg, batch, tmp_path, role):
    torch.manual_seed(4)
    model = build_model(cfg, role, PretrainObjectives(), num_answers=3).eval()
    save_model(model, tmp_path / "ours")
    meta = json.loads((tmp_path / "ours" / "model_config.json").read_text())
    assert meta["config_class"] == "lxmert_repro.modeling.visual_bert.config.VisualBertConfig"
    mine = load_model(tmp_path / "ours").eval()
    export_transformers(model, tmp_path / "hf")
    name = {
        "encoder": "VisualBertModel",
        "pretraining": "VisualBertForPreTraining",
        "vqa": "VisualBertForQuestionAnswering",
    }[role]
    hf = getattr(transformers, name).from_pretrained(tmp_path / "hf").eval()
    back = load_model(tmp_path / "hf").eval()
    for loaded in (mine, back):
        assert type(loaded) is type(model) and loaded.config == model.config
        for k, v in model.state_dict().items():
            assert torch.equal(v, loaded.state_dict()[k]), k
    with torch.no_grad():
        out, ref = model(**inputs_of(batch)), hf(**hf_inputs(batch))
    if role == "vqa":
        close(out.logits, ref.logits)
    elif role == "pretraining":
        close(out.itm_logits, ref.seq_relationship_logits.flip(-1))
    else:
        close(out.pooled_output, ref.pooler_output)


def test_nlvr2_model_export_to_transformers_is_a_clear_refusal(cfg, tmp_path):
    """The default NLVR2 model is the pair encoding (two sequences, a 2H head), which transformers has no class for;
    its VisualBertForVisualReasoning is our nlvr2_one_sequence option (below)."""
    model = build_model(cfg, "nlvr2")
    with pytest.raises(CheckpointError, match=r"transformers has no class for NLVR2Model; only \['VisualBertFor"):
        export_transformers(model, tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def _two_images(batch):
    """The batch's text with two images per example: its own boxes, then the batch's reversed (B, 2, N, .)."""
    two = {k: v for k, v in inputs_of(batch).items() if k not in ("visual_feats", "visual_boxes", "visual_mask")}
    two.update(
        {k: torch.stack([batch[k], batch[k].flip(0)], 1) for k in ("visual_feats", "visual_boxes", "visual_mask")}
    )
    return two


def test_one_sequence_nlvr2_matches_transformers_visual_reasoning(cfg, batch, tmp_path):
    """nlvr2_one_sequence=true: uclanlp/visualbert's NLVR2 input (the regions of both images after the text, region
    token type = image index) and transformers' VisualBertForVisualReasoning head (dropout + Linear(H, 2) on the
    pooled vector): logits and loss at 1e-5 with padded text and boxes; the transformers directory loads as
    this model and exports back."""
    from lxmert_repro.modeling.visual_bert import VisualBertForVisualReasoning

    hf = hf_model(transformers.VisualBertForVisualReasoning, cfg, seed=7, num_labels=2)
    with torch.no_grad():  # token types 0 and 1 far apart, so that giving both images one type would show
        hf.visual_bert.embeddings.visual_token_type_embeddings.weight.add_(torch.randn(2, cfg.hidden_size))
    ours = via_transformers_dir(hf, tmp_path)
    assert type(ours) is VisualBertForVisualReasoning and ours.load_report.ok and ours.config.nlvr2_one_sequence
    two = _two_images(batch)
    b, _, n, f = two["visual_feats"].shape
    labels = torch.tensor([1, 0, 0, 1])
    with torch.no_grad():
        ref = hf(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            visual_embeds=two["visual_feats"].reshape(b, 2 * n, f),
            visual_attention_mask=two["visual_mask"].reshape(b, 2 * n),
            visual_token_type_ids=torch.tensor([0] * n + [1] * n).expand(b, -1),
            labels=labels,
        )
        out = ours(**two, labels=labels)
        swapped = ours(**{**two, **{k: two[k].flip(1) for k in ("visual_feats", "visual_boxes", "visual_mask")}})
    close(out.logits, ref.logits)
    close(out.loss, ref.loss)
    # left and right are told apart (token types 0, 1): swapping them moves the pooled vector far above float noise
    assert (swapped.pooled_output - out.pooled_output).abs().max() > 1e-3
    export_transformers(ours, tmp_path / "back")
    back = transformers.VisualBertForVisualReasoning.from_pretrained(tmp_path / "back").eval()
    for k, v in hf.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_one_sequence_nlvr2_is_a_config_switch_keeping_each_examples_images(cfg, batch, tmp_path):
    """Off (default): task=nlvr2 builds the pair model; on: the one-sequence model, whose logits for example b are
    those of example b run alone (its text unpadded, its two images' real boxes only), and which saves and
    reloads by its class path."""
    from lxmert_repro.modeling import NLVR2Model
    from lxmert_repro.modeling.visual_bert import VisualBertForVisualReasoning

    assert type(build_model(cfg, "nlvr2")) is NLVR2Model
    torch.manual_seed(8)
    model = build_model(cfg.replace(nlvr2_one_sequence=True), "nlvr2").eval()
    assert type(model) is VisualBertForVisualReasoning
    two = _two_images(batch)
    with torch.no_grad():
        out = model(**two)
        for i in range(4):  # example i alone: its text unpadded, each image's real boxes first
            keep = [two["visual_mask"][i, k].bool() for k in range(2)]
            t = int(batch["attention_mask"][i].sum())
            feats, boxes = (_real_rows(two[k][i], keep) for k in ("visual_feats", "visual_boxes"))
            alone = model(batch["input_ids"][i : i + 1, :t], None, feats, boxes, _real_mask(keep))
            close(out.logits[i], alone.logits[0])
    save_model(model, tmp_path / "ck")
    loaded = load_model(tmp_path / "ck").eval()
    assert type(loaded) is VisualBertForVisualReasoning and loaded.config.nlvr2_one_sequence
    with torch.no_grad():
        close(loaded(**two).logits, out.logits)


def _real_rows(x, keep):
    """(2, N, .) rows of one example -> (1, 2, M, .): each image's real rows first, zero-padded to the larger count."""
    m = max(int(k.sum()) for k in keep)
    out = x.new_zeros(2, m, x.shape[-1])
    for k in range(2):
        out[k, : int(keep[k].sum())] = x[k][keep[k]]
    return out.unsqueeze(0)


def _real_mask(keep):
    m = max(int(k.sum()) for k in keep)
    mask = torch.zeros(1, 2, m, dtype=torch.long)
    for k in range(2):
        mask[0, k, : int(keep[k].sum())] = 1
    return mask


def test_boxes_are_ignored_unless_the_ablation_is_on(cfg, batch):
    torch.manual_seed(5)
    faithful = VisualBertModel(cfg).eval()
    ablation = VisualBertModel(cfg.replace(use_boxes=True)).eval()
    moved = dict(inputs_of(batch), visual_boxes=torch.rand_like(batch["visual_boxes"]))
    with torch.no_grad():
        close(faithful(**inputs_of(batch)).pooled_output, faithful(**moved).pooled_output)
        diff = (ablation(**inputs_of(batch)).pooled_output - ablation(**moved).pooled_output).abs().max()
    assert diff > 1e-4
    assert "embeddings.box_projection.weight" in ablation.state_dict()
    assert "embeddings.box_projection.weight" not in faithful.state_dict()


def test_padded_boxes_do_not_change_real_outputs(cfg, batch):
    torch.manual_seed(6)
    model = VisualBertModel(cfg).eval()
    row = {k: v[3:4] for k, v in inputs_of(batch).items()}  # the row with 3 padded boxes
    real = int(row["visual_mask"].sum())
    trimmed = dict(
        row,
        visual_feats=row["visual_feats"][:, :real],
        visual_boxes=row["visual_boxes"][:, :real],
        visual_mask=row["visual_mask"][:, :real],
    )
    with torch.no_grad():
        a, b = model(**row), model(**trimmed)
    close(a.pooled_output, b.pooled_output)
    close(a.vision_output[:, :real], b.vision_output)


def _uclanlp_names(hf_state, head_prefix):
    """transformers' VisualBert* state dict -> uclanlp/visualbert's .th names (the inverse of transformers'
    converter): the encoder under ``bert.bert.``, the head (transformers' ``cls.``) under ``head_prefix``
    (``bert.cls.`` for the pretraining heads, ``bert.classifier.`` for the VQA / NLVR2 / VCR classifiers)."""
    original = {}
    for k, v in hf_state.items():
        if k in ("cls.predictions.decoder.bias", "visual_bert.embeddings.position_ids"):
            continue  # the original BERT code has no decoder bias of its own
        k = k.replace("visual_bert.", "bert.bert.")
        k = head_prefix + k[len("cls.") :] if k.startswith("cls.") else k
        k = k.replace("visual_token_type_embeddings", "token_type_embeddings_visual")
        k = k.replace("visual_position_embeddings", "position_embeddings_visual").replace(
            "visual_projection", "projection"
        )
        original[k] = v
    original["detector.backbone.weight"] = torch.zeros(3)
    return original


@pytest.mark.parametrize("name", ["nlvr2_fine_tuned.th", "model.th"])
def test_uclanlp_nlvr2_checkpoint_imports_as_the_one_sequence_nlvr2_model(cfg, batch, tmp_path, name):
    """uclanlp/visualbert's NLVR2 head (training_head_type "nlvr": dropout + Linear(H, 2) on the pooled vector,
    ``bert.classifier``) has the VQA head's names; its 2 outputs tell it apart (the VQA head there is
    Linear(H, 3129), fixed), whatever the file is called (transformers' converter goes by the name ``nlvr``). It
    imports as our one-sequence NLVR2 model (both images' regions in one sequence, token types 0 / 1), logits and
    loss as transformers' VisualBertForVisualReasoning at 1e-5."""
    from lxmert_repro.modeling.visual_bert import VisualBertForVisualReasoning

    hf = hf_model(transformers.VisualBertForVisualReasoning, cfg, seed=9, num_labels=2)
    with torch.no_grad():  # token types 0 and 1 far apart, so reading both images as one type would show
        hf.visual_bert.embeddings.visual_token_type_embeddings.weight.add_(torch.randn(2, cfg.hidden_size))
    original = _uclanlp_names(hf.state_dict(), "bert.classifier.")
    assert original["bert.classifier.weight"].shape == (2, cfg.hidden_size)
    torch.save(original, tmp_path / name)
    ours = load_model(tmp_path / name, config=cfg).eval()
    assert type(ours) is VisualBertForVisualReasoning and ours.load_report.ok
    assert ours.config.nlvr2_one_sequence and ours.load_report.dropped == ["detector.backbone.weight"]
    assert torch.equal(ours.classifier.weight, original["bert.classifier.weight"])
    two = _two_images(batch)
    b, _, n, f = two["visual_feats"].shape
    labels = torch.tensor([1, 0, 0, 1])
    with torch.no_grad():
        ref = hf(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
            visual_embeds=two["visual_feats"].reshape(b, 2 * n, f),
            visual_attention_mask=two["visual_mask"].reshape(b, 2 * n),
            visual_token_type_ids=torch.tensor([0] * n + [1] * n).expand(b, -1),
            labels=labels,
        )
        out = ours(**two, labels=labels)
    close(out.logits, ref.logits)
    close(out.loss, ref.loss)
    save_model(ours, tmp_path / "ours")  # and it stays that model through our format
    again = load_model(tmp_path / "ours")
    assert type(again) is VisualBertForVisualReasoning and again.config.nlvr2_one_sequence


def test_uclanlp_vqa_checkpoint_still_imports_as_vqa(cfg, batch, tmp_path):
    """A classifier with more than 2 outputs (uclanlp's VQA head) stays a VQA model with that many answers."""
    hf = hf_model(transformers.VisualBertForQuestionAnswering, cfg, seed=10, num_labels=5)
    torch.save(_uclanlp_names(hf.state_dict(), "bert.classifier."), tmp_path / "vqa_fine_tuned.th")
    ours = load_model(tmp_path / "vqa_fine_tuned.th", config=cfg).eval()
    assert type(ours) is VisualBertForVQA and ours.num_answers == 5 and ours.load_report.ok
    with torch.no_grad():
        close(ours(**inputs_of(batch)).logits, hf(**hf_inputs(batch)).logits)


def test_uclanlp_vcr_checkpoint_is_a_clear_refusal(cfg, tmp_path):
    """uclanlp's VCR head (multiple choice, Linear(H, 1)) has the same names: refused, not read as 1-answer VQA."""
    hf = hf_model(transformers.VisualBertForQuestionAnswering, cfg, seed=11, num_labels=1)
    torch.save(_uclanlp_names(hf.state_dict(), "bert.classifier."), tmp_path / "vcr_fine_tune.th")
    with pytest.raises(CheckpointError, match=r"vcr_fine_tune.th: bert.classifier.weight has 1 output: .*VCR"):
        load_model(tmp_path / "vcr_fine_tune.th", config=cfg)


def test_uclanlp_checkpoint_imports_with_its_matching_convention(cfg, batch, tmp_path):
    """uclanlp/visualbert .th names (the inverse of transformers' converter, written out here); its head keeps
    1 = match (transformers' converter copies it unchanged), recorded as itm_match_class=1."""
    hf = hf_model(transformers.VisualBertForPreTraining, cfg, seed=8)
    original = _uclanlp_names(hf.state_dict(), "bert.cls.")
    torch.save(original, tmp_path / "vqa_pre_trained.th")
    ours = load_model(tmp_path / "vqa_pre_trained.th", config=cfg).eval()
    assert type(ours) is VisualBertForPreTraining and ours.load_report.ok
    assert ours.config.itm_match_class == 1 and ours.load_report.dropped == ["detector.backbone.weight"]
    t = batch["input_ids"].shape[1]
    with torch.no_grad():
        ref = hf(**hf_inputs(batch))
        out = VisualBertForPreTraining(ours.config.replace(sparse_predictions=False)).eval()
        out.load_state_dict(ours.state_dict())
        out = out(**inputs_of(batch))
    close(out.itm_logits, ref.seq_relationship_logits)  # row 1 = match there = our column 1
    close(out.mlm_logits, ref.prediction_logits[:, :t])
