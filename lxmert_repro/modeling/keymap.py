"""Parameter names: ours <-> the reference layout (transformers' LxmertForPreTraining = original with
``bert.`` renamed ``lxmert.``; docs/checkpoints.md). Every key of ours has exactly one reference name.
"""

from __future__ import annotations

import re

# BERT-layer sub-keys (language / object-relationship layers), ours -> reference.
_BERT_LAYER = [
    ("attention.attn.", "attention.self."),
    ("attention.output.dense.", "attention.output.dense."),
    ("attention.output.layer_norm.", "attention.output.LayerNorm."),
    ("ffn.intermediate.", "intermediate.dense."),
    ("ffn.output.", "output.dense."),
    ("ffn.layer_norm.", "output.LayerNorm."),
]
_CROSS_LAYER = [
    ("cross_attention.", "visual_attention.att."),
    ("cross_output.dense.", "visual_attention.output.dense."),
    ("cross_output.layer_norm.", "visual_attention.output.LayerNorm."),
]
for _s in ("lang", "visn"):
    _CROSS_LAYER += [
        (f"{_s}_self_attention.attn.", f"{_s}_self_att.self."),
        (f"{_s}_self_attention.output.dense.", f"{_s}_self_att.output.dense."),
        (f"{_s}_self_attention.output.layer_norm.", f"{_s}_self_att.output.LayerNorm."),
        (f"{_s}_ffn.intermediate.", f"{_s}_inter.dense."),
        (f"{_s}_ffn.output.", f"{_s}_output.dense."),
        (f"{_s}_ffn.layer_norm.", f"{_s}_output.LayerNorm."),
    ]
# Whole-key prefixes, ours -> reference (after the ``lxmert.`` encoder prefix for the first group).
_ENCODER_PREFIXES = [
    ("embeddings.layer_norm.", "embeddings.LayerNorm."),
    ("embeddings.", "embeddings."),
    ("visual_encoder.feat_fc.", "encoder.visn_fc.visn_fc."),
    ("visual_encoder.feat_norm.", "encoder.visn_fc.visn_layer_norm."),
    ("visual_encoder.box_fc.", "encoder.visn_fc.box_fc."),
    ("visual_encoder.box_norm.", "encoder.visn_fc.box_layer_norm."),
    ("pooler.dense.", "pooler.dense."),
]
_HEAD_PREFIXES = [
    ("mlm_head.transform.dense.", "cls.predictions.transform.dense."),
    ("mlm_head.transform.layer_norm.", "cls.predictions.transform.LayerNorm."),
    ("itm_head.", "cls.seq_relationship."),
    ("obj_head.transform.dense.", "obj_predict_head.transform.dense."),
    ("obj_head.transform.layer_norm.", "obj_predict_head.transform.LayerNorm."),
    ("obj_head.decoders.", "obj_predict_head.decoder_dict."),
    ("answer_head.dense.", "answer_head.logit_fc.0."),
    ("answer_head.layer_norm.", "answer_head.logit_fc.2."),
    ("answer_head.classifier.", "answer_head.logit_fc.3."),
]
_EXACT = {"mlm_head.bias": "cls.predictions.bias"}
# The MLM decoder is tied to the word embeddings: the reference may store it, we never do.
TIED_DECODER_KEY = "cls.predictions.decoder.weight"
WORD_EMBEDDINGS_KEY = "lxmert.embeddings.word_embeddings.weight"

_LAYER_RE = re.compile(r"^encoder\.(language_layers|object_layers|cross_layers)\.(\d+)\.(.*)$")
_LAYER_GROUP = {"language_layers": "layer", "object_layers": "r_layers", "cross_layers": "x_layers"}


def _sub(rest: str, table: list[tuple[str, str]], key: str) -> str:
    for ours, ref in table:
        if rest.startswith(ours):
            return ref + rest[len(ours) :]
    raise KeyError(f"no reference name for parameter {key!r}")


def ours_to_reference(key: str) -> str:
    """One of our full keys (``lxmert.*`` for the encoder, head keys otherwise) -> its reference name."""
    if key in _EXACT:
        return _EXACT[key]
    if key.startswith("lxmert."):
        rest = key[len("lxmert.") :]
        m = _LAYER_RE.match(rest)
        if m:
            group, idx, sub = m.groups()
            table = _CROSS_LAYER if group == "cross_layers" else _BERT_LAYER
            return f"lxmert.encoder.{_LAYER_GROUP[group]}.{idx}." + _sub(sub, table, key)
        return "lxmert." + _sub(rest, _ENCODER_PREFIXES, key)
    return _sub(key, _HEAD_PREFIXES, key)
