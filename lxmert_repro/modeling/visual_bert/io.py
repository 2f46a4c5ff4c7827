"""VisualBERT's checkpoint adapters: transformers' VisualBert* directories, both ways, and the uclanlp/visualbert
``.th`` files (read: ``bert.bert.*`` -> ``visual_bert.*``, ``bert.cls`` / ``bert.classifier`` -> ``cls``, the
``*_visual`` tables and ``projection`` renamed as transformers' converter does; ``detector.*`` dropped by name;
the matching head kept as trained there, 1 = match, recorded as ``itm_match_class=1``).

Which uclanlp model a ``.th`` file is: its ``TrainVisualBERTObjective`` names every task classifier
``bert.classifier``, over the pooled vector: Linear(H, 3129) for VQA (the answer count is fixed there), Linear(H, 2)
for NLVR2 (``training_head_type`` "nlvr", both images' regions in one sequence) and Linear(H, 1) for VCR
(multiple choice). transformers' converter tells them apart by the file name; here the classifier's outputs do:
2 is the NLVR2 head, read as ``VisualBertForVisualReasoning`` (``nlvr2_one_sequence=true``); 1 (VCR) is refused;
any other count is a VQA head. ``bert.cls.*`` alone is the pretraining heads.

Names: ours ``visual_bert.layers.N.*`` <-> ``visual_bert.encoder.layer.N.*`` (BERT layer sub-names as for
LXMERT), ``*.layer_norm`` <-> ``*.LayerNorm``, pretraining heads ``mlm_head`` <-> ``cls.predictions`` and
``itm_head`` <-> ``cls.seq_relationship``, the VQA classifier <-> ``cls``. The MLM decoder is tied to the
word embeddings and its bias to ``cls.predictions.bias``: stored by transformers, checked equal on import.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..checkpoint import Checkpoint, save_transformers_dir
from ..convert import CheckpointError
from ..keymap import _BERT_LAYER
from ..objectives import PretrainObjectives
from ..rename import export_state, import_state, our_key_names, prefix_table
from .config import VisualBertConfig
from .model import VisualBertModel
from .nlvr2 import VisualBertForVisualReasoning
from .pretraining import VisualBertForPreTraining
from .vqa import VisualBertForVQA

TRANSFORMERS_MODEL_TYPE = "visual_bert"
FILE_FORMATS = ("visualbert-uclanlp",)
FILE_DESCRIPTION = "a uclanlp/visualbert .th state dict"
_UCLANLP_RENAMES = [  # applied in order to each key, as transformers' convert_visual_bert_original_... script
    ("bert.bert.", "visual_bert."),
    ("bert.cls.", "cls."),
    ("bert.classifier.", "cls."),
    ("token_type_embeddings_visual", "visual_token_type_embeddings"),
    ("position_embeddings_visual", "visual_position_embeddings"),
    ("embeddings.projection.", "embeddings.visual_projection."),
]
_TRANSFORMERS_CLASS = {
    VisualBertModel: "VisualBertModel",
    VisualBertForPreTraining: "VisualBertForPreTraining",
    VisualBertForVQA: "VisualBertForQuestionAnswering",
    VisualBertForVisualReasoning: "VisualBertForVisualReasoning",
}
# transformers config field -> ours (same meaning).
_CONFIG_FIELDS = {
    "vocab_size": "vocab_size",
    "hidden_size": "hidden_size",
    "num_hidden_layers": "num_hidden_layers",
    "num_attention_heads": "num_attention_heads",
    "intermediate_size": "intermediate_size",
    "hidden_act": "hidden_act",
    "hidden_dropout_prob": "hidden_dropout_prob",
    "attention_probs_dropout_prob": "attention_probs_dropout_prob",
    "layer_norm_eps": "layer_norm_eps",
    "max_position_embeddings": "max_position_embeddings",
    "type_vocab_size": "type_vocab_size",
    "initializer_range": "initializer_range",
    "pad_token_id": "pad_token_id",
    "visual_embedding_dim": "visual_feat_dim",
    "special_visual_initialize": "special_visual_initialize",
}
OUR_CONFIG_ATTR = "lxmert_repro_config"
_LAYER_RE = re.compile(r"^visual_bert\.layers\.(\d+)\.(.*)$")
_ENCODER = [
    ("visual_bert.embeddings.layer_norm.", "visual_bert.embeddings.LayerNorm."),
    ("visual_bert.embeddings.box_projection.", None),
    ("visual_bert.embeddings.", "visual_bert.embeddings."),
    ("visual_bert.pooler.", "visual_bert.pooler."),
]
_HEADS = [
    ("mlm_head.transform.dense.", "cls.predictions.transform.dense."),
    ("mlm_head.transform.layer_norm.", "cls.predictions.transform.LayerNorm."),
    ("mlm_head.bias", "cls.predictions.bias"),
    ("itm_head.", "cls.seq_relationship."),
    ("classifier.", "cls."),
]
TIED = {
    "cls.predictions.decoder.weight": "visual_bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def to_reference(key: str) -> str:
    """One of our full keys (``visual_bert.*`` for the encoder) -> transformers' name."""
    m = _LAYER_RE.match(key)
    if m:
        return f"visual_bert.encoder.layer.{m.group(1)}." + prefix_table(m.group(2), _BERT_LAYER, "VisualBERT")
    for ours, ref in _ENCODER + _HEADS:
        if key.startswith(ours):
            if ref is None:
                raise CheckpointError(f"{key}: the box ablation (use_boxes=True) has no transformers equivalent")
            return ref + key[len(ours) :]
    raise KeyError(f"no reference name for VisualBERT parameter {key!r}")


def detect_file(keys: set[str]) -> str | None:
    return "visualbert-uclanlp" if any(k.startswith("bert.bert.") for k in keys) else None


def _count_layers(ref: dict[str, torch.Tensor]) -> int:
    idx = {int(m.group(1)) for k in ref if (m := re.match(r"^visual_bert\.encoder\.layer\.(\d+)\.", k))}
    return max(idx) + 1 if idx else 0


def read_file(path: Path, fmt: str, state: dict[str, torch.Tensor], base: Any | None) -> Checkpoint:
    """A uclanlp/visualbert .th state dict. Sizes from the tensors; heads etc. from ``base`` (a VisualBertConfig)."""
    if base is not None and not isinstance(base, VisualBertConfig):
        raise CheckpointError(f"{path}: --config must be a VisualBERT config, got {type(base).__name__}")
    ref: dict[str, torch.Tensor] = {}
    dropped = sorted(k for k in state if k.startswith("detector."))
    for key, value in state.items():
        if key in dropped:
            continue
        new = key
        for old, repl in _UCLANLP_RENAMES:
            new = new.replace(old, repl)
        ref[new] = value

    def shape(key: str) -> tuple[int, ...]:
        if key not in ref:
            raise CheckpointError(f"{path}: no {key!r} after renaming: not a uclanlp VisualBERT checkpoint?")
        return tuple(ref[key].shape)

    vocab, hidden = shape("visual_bert.embeddings.word_embeddings.weight")
    changes = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        num_hidden_layers=_count_layers(ref),
        intermediate_size=shape("visual_bert.encoder.layer.0.intermediate.dense.weight")[0],
        max_position_embeddings=shape("visual_bert.embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("visual_bert.embeddings.token_type_embeddings.weight")[0],
        visual_feat_dim=shape("visual_bert.embeddings.visual_projection.weight")[1],
        itm_match_class=1,
    )
    base = base or VisualBertConfig(num_attention_heads=max(1, hidden // 64))
    try:
        config = base.replace(**changes)
    except ValueError as e:
        raise CheckpointError(f"{path}: {e}") from None
    return _checkpoint_from_reference(ref, config, _uclanlp_class(ref, path), str(path), dropped)


def _uclanlp_class(ref: dict[str, torch.Tensor], path: Path) -> list[str]:
    """The transformers class a uclanlp file's task classifier (``bert.classifier``, renamed ``cls``) belongs to."""
    if "cls.weight" not in ref:
        return []  # the pretraining heads or the encoder alone: told apart by their names
    outputs = int(ref["cls.weight"].shape[0])
    if outputs == 2:
        return ["VisualBertForVisualReasoning"]  # training_head_type "nlvr": Linear(H, 2) on the pooled vector
    if outputs == 1:
        raise CheckpointError(
            f"{path}: bert.classifier.weight has 1 output: uclanlp's VCR multiple-choice head, which is not "
            "supported; expected 2 outputs (NLVR2) or the VQA answers (3129 there)"
        )
    return ["VisualBertForQuestionAnswering"]


def config_from_transformers(values: dict[str, Any], source: str) -> VisualBertConfig:
    if values.get("bypass_transformer"):
        raise CheckpointError(f"{source}: bypass_transformer=true is not supported (VisualBERT's VCR variant)")
    ours = dict(values.get(OUR_CONFIG_ATTR) or {})
    for theirs, mine in _CONFIG_FIELDS.items():
        if theirs in values:
            ours[mine] = values[theirs]
    if ours.get("hidden_act") == "gelu_python":
        ours["hidden_act"] = "gelu"
    return VisualBertConfig.from_dict(ours, source=source)


def config_to_transformers(config: VisualBertConfig, num_labels: int | None = None):
    import transformers

    values = {theirs: getattr(config, mine) for theirs, mine in _CONFIG_FIELDS.items()}
    tcfg = transformers.VisualBertConfig(**values, bypass_transformer=False)
    if num_labels is not None:
        tcfg.num_labels = num_labels
    setattr(tcfg, OUR_CONFIG_ATTR, config.to_dict())
    return tcfg


def read_transformers(path: Path, values: dict[str, Any], weights: dict[str, torch.Tensor]) -> Checkpoint:
    config = config_from_transformers(values, str(path / "config.json"))
    ref = {
        ("visual_bert." + k if k.split(".", 1)[0] in ("embeddings", "encoder", "pooler") else k): v
        for k, v in weights.items()
    }  # a bare VisualBertModel has no prefix
    return _checkpoint_from_reference(ref, config, values.get("architectures") or [], str(path), [])


def _checkpoint_from_reference(
    ref: dict[str, torch.Tensor], config: VisualBertConfig, archs: list[str], source: str, dropped: list[str]
) -> Checkpoint:
    """Transformers-named tensors -> the checkpoint of the model class they belong to."""
    objectives = None
    if "VisualBertForVisualReasoning" in archs:  # its head has the VQA head's names: only the class tells them apart
        config = config.replace(nlvr2_one_sequence=True)
        cls, num_answers, args = VisualBertForVisualReasoning, None, (config,)
    elif "VisualBertForQuestionAnswering" in archs or "cls.weight" in ref:
        cls, num_answers = VisualBertForVQA, int(ref["cls.weight"].shape[0]) if "cls.weight" in ref else None
        args: tuple = (config, num_answers or 1)
    elif "VisualBertForPreTraining" in archs or any(k.startswith("cls.predictions.") for k in ref):
        cls, num_answers, objectives = (
            VisualBertForPreTraining,
            None,
            PretrainObjectives(task_mask_lm=True, task_matched=True),
        )
        args = (config, objectives)
    else:
        cls, num_answers, args = VisualBertModel, None, (config,)
    keys = our_key_names(cls, *args)
    if cls is VisualBertModel:
        keys = ["visual_bert." + k for k in keys]
    state, unused = import_state(ref, keys, to_reference, TIED)
    aliases = {k: to_reference(k) for k in keys}
    return Checkpoint(config, cls, state, objectives, num_answers, {}, source, unused, aliases, dropped)


def export_transformers(model: nn.Module, out_dir: str | Path) -> Path:
    """A directory that ``transformers.VisualBert<Model|ForPreTraining|ForQuestionAnswering>.from_pretrained``
    loads; our config rides along under ``lxmert_repro_config``."""
    import transformers

    if type(model) not in _TRANSFORMERS_CLASS:  # e.g. NLVR2Model: VisualBertForVisualReasoning has another head
        raise CheckpointError(
            f"transformers has no class for {type(model).__name__}; only "
            f"{sorted(c.__name__ for c in _TRANSFORMERS_CLASS)} export"
        )
    name = _TRANSFORMERS_CLASS[type(model)]
    num_labels = 2 if type(model) is VisualBertForVisualReasoning else getattr(model, "num_answers", None)
    tcfg = config_to_transformers(model.config, num_labels)
    tcfg.architectures = [name]
    with torch.random.fork_rng():
        tm = getattr(transformers, name)(tcfg)
    state = model.state_dict()
    if type(model) is VisualBertModel:
        ref = {
            k[len("visual_bert.") :]: v
            for k, v in export_state({"visual_bert." + k: v for k, v in state.items()}, to_reference).items()
        }
    else:
        ref = export_state(state, to_reference, TIED if hasattr(model, "mlm_head") else None)
    result = tm.load_state_dict(ref, strict=False)
    missing = [k for k in result.missing_keys if k not in TIED]
    if missing or result.unexpected_keys:
        raise CheckpointError(f"export to transformers.{name}: missing {missing}, unexpected {result.unexpected_keys}")
    return save_transformers_dir(tm, out_dir)
