"""Every architecture through the same commands: pretrain, fine-tune on VQA from it, reload.

Only the ``model=`` override differs; the trainer, data pipeline and objective config are the same.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from training_helpers import TINY_TRAINER, build_easy_vqa_data, compose, data_overrides

torch.set_num_threads(1)

ARCHITECTURES = {  # model config -> (objectives it trains, its encoder attribute)
    "visualbert_tiny": ({"mlm", "itm"}, "visual_bert"),
    "vilbert_tiny": ({"mlm", "itm", "region_kl"}, "vilbert"),
}


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> dict[str, str]:
    return build_easy_vqa_data(tmp_path_factory.mktemp("easy_vqa_arch"), n_train_images=40, n_test_images=16)


def _cfg(easy, task: str, out: Path, model: str, *extra: str):
    name = "pretrain" if task == "pretrain" else "finetune_vqa"
    overrides = [o for o in TINY_TRAINER if not o.startswith("model=")] + [f"model={model}"]
    return compose(name, overrides + data_overrides(easy, task) + [f"paths.output_dir={out}", *extra])


@pytest.mark.parametrize("model", sorted(ARCHITECTURES))
def test_pretrain_finetune_reload(easy, tmp_path, model):
    from lxmert_repro.modeling import load_model
    from lxmert_repro.training.finetune import train_vqa
    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    objectives, prefix = ARCHITECTURES[model]
    pre = tmp_path / "pre"
    train_pretrain(
        _cfg(
            easy,
            "pretrain",
            pre,
            model,
            "trainer.batch_size=16",
            "trainer.max_steps=3",
            "data.pretrain.val=null",
            "trainer.peak_flops=1e12",
        )
    )
    rows = [r for r in read_metrics(pre) if "train/loss" in r]
    assert len(rows) == 3 and {k[len("train/") :] for k in rows[-1] if k.startswith("train/")} >= objectives
    # model FLOPs are counted for LXMERT only: throughput is logged, model FLOP/s and MFU are left out
    assert all(r["samples_per_s"] > 0 and "model_flops_per_s" not in r and "mfu" not in r for r in rows)
    pretrained = load_model(pre / "model_last")
    assert pretrained.ROLE == "pretraining" and set(pretrained.objectives.requested()) == objectives

    ft = tmp_path / "ft"
    metrics = train_vqa(
        _cfg(
            easy,
            "vqa",
            ft,
            model,
            "trainer.batch_size=16",
            "trainer.max_steps=3",
            f"finetune.init_from={pre / 'model_last'}",
        )
    )
    assert "test/accuracy" in metrics
    vqa = load_model(ft / "model_last")
    assert vqa.ROLE == "vqa" and type(vqa.config) is type(pretrained.config)
    # the encoder came from pretraining (the fine-tuning steps moved it only a little)
    a = getattr(vqa, prefix).embeddings.word_embeddings.weight
    b = getattr(pretrained, prefix).embeddings.word_embeddings.weight
    assert (a - b).abs().max() < 0.05


@pytest.mark.parametrize("model", sorted(ARCHITECTURES))
def test_vqa_outputs_give_text_to_region_attention(model):
    """What lxmert-predict draws: [CLS] -> boxes attention of the last cross-modal layer, (B, heads, T, N)."""
    from model_helpers import inputs_of, make_batch, model_config

    from lxmert_repro.modeling import build_model

    cfg = model_config(model)
    vqa = build_model(cfg, "vqa", num_answers=3).eval()
    batch = make_batch(cfg, pad_boxes=True)
    with torch.no_grad():
        out = vqa(**inputs_of(batch), output_attentions=True)
    b, t = batch["input_ids"].shape
    att = out.cross_attentions[-1]
    assert att.shape[0] == b and att.shape[2:] == (t, batch["visual_feats"].shape[1])
    assert (att[3, :, :, -3:] == 0).all()  # the padded boxes get no attention


def test_small_configs_have_matched_parameter_counts():
    """The comparison's sizes (VQA model: 1,000 words, 256-d features, 13 answers) within 6% of lxmert_small."""
    from model_helpers import model_config

    from lxmert_repro.modeling import build_model

    def count(name: str) -> int:
        cfg = model_config(name, vocab_size=1000, visual_feat_dim=256)
        with torch.device("meta"):
            return sum(p.numel() for p in build_model(cfg, "vqa", num_answers=13).parameters())

    counts = {name: count(name) for name in ("lxmert_small", "visualbert_small", "vilbert_small")}
    assert counts == {"lxmert_small": 1_482_893, "visualbert_small": 1_521_037, "vilbert_small": 1_565_325}
    assert max(counts.values()) / min(counts.values()) < 1.06
