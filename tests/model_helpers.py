"""Shared helpers for the model tests: the tiny config (from configs/model/lxmert_tiny.yaml), batches, transformers twins."""

from __future__ import annotations

import torch
import transformers
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from lxmert_repro.cli import CONFIG_DIR as PACKAGE_CONFIG_DIR
from lxmert_repro.modeling import LxmertConfig
from lxmert_repro.modeling.convert import config_to_transformers

CONFIG_DIR = str(PACKAGE_CONFIG_DIR / "model")


def model_config(name: str, **changes):
    """The config of ``configs/model/<name>.yaml`` (any architecture), with ``changes``."""
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base=None):
        cfg = instantiate(compose(name))
    return cfg.replace(**changes) if changes else cfg


def tiny_config(**changes) -> LxmertConfig:
    return model_config("lxmert_tiny", **changes)


def hf_twin(cfg: LxmertConfig, cls=transformers.LxmertForPreTraining, seed: int = 0, num_qa_labels=None):
    torch.manual_seed(seed)
    tcfg = config_to_transformers(cfg, num_qa_labels)
    tcfg.return_dict = True
    return cls(tcfg).eval()


def make_batch(
    cfg: LxmertConfig, b: int = 4, t: int = 7, n: int = 6, seed: int = 1, pad_text: bool = True, pad_boxes: bool = False
) -> dict[str, torch.Tensor]:
    """A pretraining batch with every target field of LxmertBatch; >= 1 masked token and box per example."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, cfg.vocab_size, (b, t), generator=g)
    attention_mask = torch.ones(b, t, dtype=torch.long)
    if pad_text:
        for i in range(b):
            attention_mask[i, t - i :] = 0  # row i has i padded tokens
    visual_mask = torch.ones(b, n, dtype=torch.long)
    if pad_boxes:
        for i in range(b):
            visual_mask[i, n - i :] = 0
    mlm_labels = torch.full((b, t), -100)
    mlm_labels[:, 1] = torch.randint(0, cfg.vocab_size, (b,), generator=g)
    mlm_labels[0, 3] = 5
    masked_boxes = torch.rand(b, n, generator=g) < 0.3
    masked_boxes[:, 0] = True
    masked_boxes &= visual_mask.bool()
    n_obj, n_attr, n_qa = (getattr(cfg, k, 7) for k in ("num_object_labels", "num_attr_labels", "num_qa_labels"))
    obj_labels = torch.randint(0, n_obj, (b, n), generator=g).masked_fill(visual_mask == 0, -100)
    attr_labels = torch.randint(0, n_attr, (b, n), generator=g).masked_fill(visual_mask == 0, -100)
    itm_labels = torch.tensor([1, 0, 1, 1] * (b // 4) + [1] * (b % 4))
    qa_labels = torch.randint(0, n_qa, (b,), generator=g).masked_fill(itm_labels == 0, -100)
    return dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        token_type_ids=torch.zeros(b, t, dtype=torch.long),
        visual_feats=torch.randn(b, n, cfg.visual_feat_dim, generator=g),
        visual_boxes=torch.rand(b, n, 4, generator=g),
        visual_mask=visual_mask,
        mlm_labels=mlm_labels,
        itm_labels=itm_labels,
        obj_labels=obj_labels,
        obj_conf=torch.rand(b, n, generator=g) * visual_mask,
        attr_labels=attr_labels,
        attr_conf=torch.rand(b, n, generator=g) * visual_mask,
        feat_targets=torch.randn(b, n, cfg.visual_feat_dim, generator=g),
        masked_boxes=masked_boxes,
        qa_labels=qa_labels,
    )


MODEL_INPUTS = ("input_ids", "attention_mask", "visual_feats", "visual_boxes", "visual_mask", "token_type_ids")


def inputs_of(batch: dict) -> dict:
    return {k: batch[k] for k in MODEL_INPUTS}


def hf_inputs(batch: dict) -> dict:
    return dict(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        visual_feats=batch["visual_feats"],
        visual_pos=batch["visual_boxes"],
        visual_attention_mask=batch["visual_mask"],
        token_type_ids=batch["token_type_ids"],
    )
