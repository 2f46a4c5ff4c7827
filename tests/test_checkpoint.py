"""Checkpoints: our format round trips, original LXMERT .pth imports, transformers dirs both ways, error cases."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from model_helpers import hf_inputs, hf_twin, inputs_of, make_batch, tiny_config
from safetensors.torch import load_file, save_file

from lxmert_repro.cli.convert import main as convert_main
from lxmert_repro.modeling import (
    CheckpointError,
    LxmertForPreTraining,
    LxmertForVQA,
    LxmertModel,
    PretrainObjectives,
    export_transformers,
    load_model,
    save_model,
)


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def batch(cfg):
    return make_batch(cfg, pad_boxes=True)


def run(model, batch):
    with torch.no_grad():
        return model.eval()(**inputs_of(batch))


def assert_same(a, b, atol=1e-5):
    torch.testing.assert_close(a, b, atol=atol, rtol=0)


@pytest.mark.parametrize("arch", ["LxmertModel", "LxmertForPreTraining", "LxmertForVQA"])
def test_our_format_round_trip(tmp_path, cfg, batch, arch):
    torch.manual_seed(3)
    model = (
        LxmertForVQA(cfg, 5)
        if arch == "LxmertForVQA"
        else {"LxmertModel": LxmertModel, "LxmertForPreTraining": LxmertForPreTraining}[arch](cfg)
    )
    save_model(model, tmp_path / "ck", metadata={"answers": ["a", "b"]})
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["model.safetensors", "model_config.json"]
    loaded = load_model(tmp_path / "ck")
    assert type(loaded) is type(model) and loaded.config == model.config
    assert loaded.load_report.ok
    assert_same(run(loaded, batch).pooled_output, run(model, batch).pooled_output)
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    meta = json.loads((tmp_path / "ck" / "model_config.json").read_text())
    assert meta["metadata"] == {"answers": ["a", "b"]} and meta["architecture"] == arch


def test_nlvr2_model_round_trips_through_the_model_interface(tmp_path, cfg, batch):
    """LXMERT's nlvr2 role is the generic NLVR2Model (LxmertForNLVR2 its old name): saved with its class path,
    rebuilt by load_model, convertible by role name; transformers has no such class, so exporting it is a clear
    refusal. A checkpoint written before, which records the old class path, still loads."""
    from lxmert_repro.modeling import LxmertForNLVR2, NLVR2Model, build_model

    torch.manual_seed(4)
    model = build_model(cfg, "nlvr2")
    assert type(model) is NLVR2Model and LxmertForNLVR2 is NLVR2Model
    assert sorted({k.split(".")[0] for k in model.state_dict()}) == ["lxmert", "pair_head"]
    save_model(model, tmp_path / "ck")
    meta_path = tmp_path / "ck" / "model_config.json"
    meta = json.loads(meta_path.read_text())
    assert meta["model_class"] == "lxmert_repro.modeling.nlvr2.NLVR2Model"
    loaded = load_model(tmp_path / "ck")
    assert type(loaded) is NLVR2Model and loaded.load_report.ok
    two = {k: v for k, v in inputs_of(batch).items() if k not in ("visual_feats", "visual_boxes", "visual_mask")}
    two.update(
        {k: torch.stack([batch[k], batch[k].flip(0)], 1) for k in ("visual_feats", "visual_boxes", "visual_mask")}
    )
    with torch.no_grad():
        assert_same(loaded.eval()(**two).logits, model.eval()(**two).logits)
    meta["model_class"] = "lxmert_repro.modeling.nlvr2.LxmertForNLVR2"  # as checkpoints of the LXMERT-only class
    meta_path.write_text(json.dumps(meta))
    old = load_model(tmp_path / "ck")
    assert type(old) is NLVR2Model and old.load_report.ok
    with torch.no_grad():
        assert_same(old.eval()(**two).logits, model.eval()(**two).logits)
    assert type(load_model(tmp_path / "ck", "encoder", strict=False)) is LxmertModel
    with pytest.raises(CheckpointError, match="transformers has no class for NLVR2Model"):
        export_transformers(model, tmp_path / "hf")


def test_our_format_errors_name_the_tensor(tmp_path, cfg):
    model = LxmertForPreTraining(cfg)
    save_model(model, tmp_path / "ck")
    weights = tmp_path / "ck" / "model.safetensors"
    state = load_file(str(weights))
    # wrong shape
    bad = dict(state, **{"itm_head.weight": torch.zeros(3, cfg.hidden_size)})
    save_file(bad, str(weights))
    with pytest.raises(
        CheckpointError, match=r"wrong shape: itm_head\.weight: checkpoint \(3, 32\) vs model \(2, 32\)"
    ):
        load_model(tmp_path / "ck")
    # missing + unexpected
    bad = {k: v for k, v in state.items() if k != "mlm_head.bias"}
    bad["extra.thing"] = torch.zeros(1)
    save_file(bad, str(weights))
    with pytest.raises(CheckpointError, match=r"missing: mlm_head\.bias; unexpected: extra\.thing"):
        load_model(tmp_path / "ck")
    weights.unlink()
    with pytest.raises(FileNotFoundError, match="model.safetensors missing"):
        load_model(tmp_path / "ck")
    with pytest.raises(CheckpointError, match="neither model_config.json"):
        load_model(tmp_path)


def test_partial_load_drops_pretraining_heads(tmp_path, cfg, batch):
    pre = LxmertForPreTraining(cfg)
    save_model(pre, tmp_path / "pre")
    with pytest.raises(CheckpointError, match="unexpected: .*mlm_head"):
        load_model(tmp_path / "pre", LxmertForVQA, num_answers=5)
    vqa = load_model(tmp_path / "pre", LxmertForVQA, num_answers=5, strict=False)
    rep = vqa.load_report
    assert any(k.startswith("itm_head") for k in rep.unexpected)
    assert any(k.startswith("answer_head.classifier.weight") for k in rep.mismatched)
    assert rep.missing == []
    assert_same(run(vqa.lxmert, batch).pooled_output, run(pre.lxmert, batch).pooled_output)
    assert torch.equal(vqa.answer_head.dense.weight, pre.answer_head.dense.weight)


def _original_pretraining_state(hf, wrap_heads: bool):
    """The original Epoch20_LXRT.pth layout: `module.bert.*` (DataParallel) + heads, from a transformers twin."""
    out = {}
    for k, v in hf.state_dict().items():
        if k.startswith("lxmert."):
            out["module.bert." + k[len("lxmert.") :]] = v
        else:
            out[("module." if wrap_heads else "") + k] = v
    return out


@pytest.mark.parametrize("wrap_heads", [True, False])
def test_import_original_pretraining_pth(tmp_path, cfg, batch, wrap_heads):
    hf = hf_twin(cfg, seed=7)
    path = tmp_path / "Epoch20_LXRT.pth"
    torch.save(_original_pretraining_state(hf, wrap_heads), path)
    model = load_model(path, config=cfg)  # heads count from cfg; sizes read from the tensors
    assert isinstance(model, LxmertForPreTraining) and model.load_report.ok
    assert model.config.num_object_labels == cfg.num_object_labels and model.config.l_layers == cfg.l_layers
    with torch.no_grad():
        ref = hf(**hf_inputs(batch))
    out = run(model, batch)
    assert_same(out.mlm_logits, ref.prediction_logits)
    assert_same(out.qa_logits, ref.question_answering_score)


@pytest.mark.parametrize("name", ["random.bin", "random.pth", "random.safetensors"])
def test_random_file_is_not_a_supported_checkpoint(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(bytes(range(256)) * 40)
    with pytest.raises(
        CheckpointError,
        match=rf"{path}: not a checkpoint of a supported format \(tried: a model "
        r"directory of ours.*transformers.*original LXMERT \.pth.*"
        r"uclanlp/visualbert.*vilbert-multi-task",
    ):
        load_model(path)


def test_original_pth_errors(tmp_path, cfg):
    hf = hf_twin(cfg, seed=7)
    state = _original_pretraining_state(hf, True)
    del state["module.bert.encoder.layer.1.attention.self.key.weight"]
    torch.save(state, tmp_path / "a.pth")
    with pytest.raises(
        CheckpointError,
        match=r"missing: lxmert\.encoder\.language_layers\.1\.attention\.attn\.key"
        r"\.weight \(source name lxmert\.encoder\.layer\.1\.attention\.self\.key",
    ):
        load_model(tmp_path / "a.pth", config=cfg)
    state = _original_pretraining_state(hf, True)
    state["module.cls.predictions.decoder.weight"] = torch.randn_like(state["module.cls.predictions.decoder.weight"])
    torch.save(state, tmp_path / "b.pth")
    with pytest.raises(CheckpointError, match="must be tied"):
        load_model(tmp_path / "b.pth", config=cfg)
    state = _original_pretraining_state(hf, True)
    state["module.bert.encoder.some_new_block.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "c.pth")
    with pytest.raises(CheckpointError, match=r"unexpected: lxmert\.encoder\.some_new_block\.weight"):
        load_model(tmp_path / "c.pth", config=cfg)
    assert load_model(tmp_path / "c.pth", config=cfg, strict=False).load_report.unexpected == [
        "lxmert.encoder.some_new_block.weight"
    ]


def test_import_original_vqa_pth(tmp_path, cfg, batch):
    hf = hf_twin(cfg, transformers.LxmertForQuestionAnswering, num_qa_labels=11, seed=4)
    state = {}
    for k, v in hf.state_dict().items():
        k = k.replace("lxmert.", "lxrt_encoder.model.bert.", 1) if k.startswith("lxmert.") else k
        state[k.replace("answer_head.logit_fc.", "logit_fc.")] = v
    torch.save(state, tmp_path / "BEST.pth")
    model = load_model(tmp_path / "BEST.pth", config=cfg)
    assert isinstance(model, LxmertForVQA) and model.num_answers == 11
    with torch.no_grad():
        ref = hf(**hf_inputs(batch)).question_answering_score
    assert_same(run(model, batch).logits, ref)


@pytest.mark.parametrize(
    "hf_cls,ours_cls",
    [
        (transformers.LxmertModel, LxmertModel),
        (transformers.LxmertForPreTraining, LxmertForPreTraining),
        (transformers.LxmertForQuestionAnswering, LxmertForVQA),
    ],
)
def test_import_transformers_dirs(tmp_path, cfg, batch, hf_cls, ours_cls):
    hf = hf_twin(cfg, hf_cls, seed=2)
    hf.save_pretrained(tmp_path / "hf")
    model = load_model(tmp_path / "hf")
    assert type(model) is ours_cls and model.load_report.ok
    with torch.no_grad():
        ref = hf(**hf_inputs(batch))
    out = run(model, batch)
    if ours_cls is LxmertForVQA:
        assert_same(out.logits, ref.question_answering_score)
    elif ours_cls is LxmertModel:
        assert_same(out.pooled_output, ref.pooled_output)
    else:
        assert_same(out.mlm_logits, ref.prediction_logits)


def test_export_transformers_loads_with_from_pretrained(tmp_path, cfg, batch):
    torch.manual_seed(11)
    objectives = PretrainObjectives(obj_attr_masked_only=True)  # one of our own fields, must survive the round trip
    model = LxmertForPreTraining(cfg, objectives)
    export_transformers(model, tmp_path / "hf")
    hf = transformers.LxmertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        ref = hf(**hf_inputs(batch))
    out = run(model, batch)
    assert_same(out.mlm_logits, ref.prediction_logits)
    assert_same(out.itm_logits, ref.cross_relationship_score)
    back = load_model(tmp_path / "hf")
    assert back.config == cfg and back.objectives == model.objectives
    for k, v in model.state_dict().items():
        assert torch.equal(v, back.state_dict()[k]), k


def test_cli_convert(tmp_path, cfg, batch, capsys):
    hf = hf_twin(cfg, seed=9)
    torch.save(_original_pretraining_state(hf, True), tmp_path / "orig.pth")
    cfg_json = tmp_path / "tiny.json"
    cfg_json.write_text(json.dumps(cfg.to_dict()))
    assert (
        convert_main(
            [str(tmp_path / "orig.pth"), str(tmp_path / "ours"), "--from", "lxmert", "--config", str(cfg_json)]
        )
        == 0
    )
    assert convert_main([str(tmp_path / "ours"), str(tmp_path / "hf"), "--to", "transformers"]) == 0
    hf2 = transformers.LxmertForPreTraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        assert_same(hf2(**hf_inputs(batch)).prediction_logits, hf(**hf_inputs(batch)).prediction_logits)
    assert (
        convert_main([str(tmp_path / "ours"), str(tmp_path / "vqa"), "--model", "LxmertForVQA", "--num-answers", "4"])
        == 2
    )
    assert "pass strict=False" in capsys.readouterr().err
    assert (
        convert_main(
            [
                str(tmp_path / "ours"),
                str(tmp_path / "vqa"),
                "--model",
                "LxmertForVQA",
                "--num-answers",
                "4",
                "--partial",
            ]
        )
        == 0
    )
    assert isinstance(load_model(tmp_path / "vqa"), LxmertForVQA)


def test_version_1_checkpoints_still_load(tmp_path, cfg, batch):
    """Files written before the architecture/objective split: class name only, objective fields in the config."""
    torch.manual_seed(5)
    model = LxmertForPreTraining(cfg, PretrainObjectives(task_qa=False, visual_loss_normalizer=2.0))
    save_model(model, tmp_path / "ck")
    path = tmp_path / "ck" / "model_config.json"
    meta = json.loads(path.read_text())
    v1 = {
        "format": "lxmert-repro",
        "format_version": 1,
        "architecture": "LxmertForPreTraining",
        "num_answers": None,
        "config": {**meta["config"], **meta["objectives"]},
        "metadata": {},
    }
    path.write_text(json.dumps(v1))
    loaded = load_model(tmp_path / "ck")
    assert type(loaded) is LxmertForPreTraining and loaded.config == cfg
    assert loaded.objectives == model.objectives and loaded.answer_head is None
    assert_same(run(loaded, batch).mlm_logits, run(model, batch).mlm_logits)


def test_original_pth_of_other_hidden_size_needs_the_head_count(tmp_path, cfg, capsys):
    """An original .pth records no head count: hidden/64 heads would be a silent guess (tiny: 1 head, not 4)."""
    path = tmp_path / "tiny_LXRT.pth"
    torch.save(_original_pretraining_state(hf_twin(cfg, seed=3), True), path)
    with pytest.raises(CheckpointError, match=rf"{path}: hidden size 32 .*num_attention_heads"):
        load_model(path)
    assert convert_main([str(path), str(tmp_path / "ours"), "--from", "lxmert"]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "--config" in err and "num_attention_heads" in err
    assert not (tmp_path / "ours").exists()
    assert load_model(path, config=cfg).config.num_attention_heads == cfg.num_attention_heads == 4
