"""ViLBERT's checkpoint adapter: vilbert-multi-task state dicts (``torch.save`` of BertForMultiModalPreTraining
or VILBertForVLTasks), both ways.

Every reference tensor is accounted for: loaded, a checked tied duplicate (``cls.predictions.decoder``), or
dropped by name -- ``biOutput.q_dense{1,2}`` (created by BertBiOutput but never read by its forward; written
back as zeros on export so the reference's strict ``load_state_dict`` accepts the file) and, when a task model
is built, the heads of the repository's other tasks. The task head decides the model: ``vil_prediction`` (VQA)
first, else ``vil_binary_prediction`` (NLVR2, our ``NLVR2Model``), else the pretraining heads or the encoder alone.
Anything else is unexpected (strict loading names it).
The file carries no config: sizes are read from the tensors, head counts and the co-attention schedule
come from the given config (default: bert_base_6layer_6conect.json's).

Region classes: the reference's masked-region head (``cls.imagePredictions.decoder``, v_target_size rows) has
the background in row 0 and the detector's class c in row c + 1 (the Visual Genome detector's ``__background__``
first); ours (``region_head.decoder``) has class c in row c and the background last (row C), as the feature
store's class distributions and ``obj_labels``. Import moves the reference's row 0 to the end, export moves it
back, so our column c and the reference's class c are the same class and a file round-trips bit for bit.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ...io_utils import atomic_path
from ..checkpoint import Checkpoint
from ..convert import CheckpointError
from ..keymap import _BERT_LAYER
from ..nlvr2 import NLVR2Model
from ..objectives import PretrainObjectives
from ..rename import export_state, import_state, our_key_names, prefix_table
from .config import VilbertConfig
from .model import VilbertModel
from .pretraining import VilbertForPreTraining
from .vqa import VilbertForVQA

FILE_FORMATS = ("vilbert",)
FILE_DESCRIPTION = "a facebookresearch/vilbert-multi-task state dict (.bin)"
_LAYER_RE = re.compile(r"^vilbert\.(text_layers|vision_layers|co_layers)\.(\d+)\.(.*)$")
_GROUP = {"text_layers": "layer", "vision_layers": "v_layer", "co_layers": "c_layer"}
_CO_LAYER = [
    ("vision_attn.query.", "biattention.query1."),
    ("vision_attn.key.", "biattention.key1."),
    ("vision_attn.value.", "biattention.value1."),
    ("text_attn.query.", "biattention.query2."),
    ("text_attn.key.", "biattention.key2."),
    ("text_attn.value.", "biattention.value2."),
    ("vision_output.dense.", "biOutput.dense1."),
    ("vision_output.layer_norm.", "biOutput.LayerNorm1."),
    ("text_output.dense.", "biOutput.dense2."),
    ("text_output.layer_norm.", "biOutput.LayerNorm2."),
    ("vision_ffn.intermediate.", "v_intermediate.dense."),
    ("vision_ffn.output.", "v_output.dense."),
    ("vision_ffn.layer_norm.", "v_output.LayerNorm."),
    ("text_ffn.intermediate.", "t_intermediate.dense."),
    ("text_ffn.output.", "t_output.dense."),
    ("text_ffn.layer_norm.", "t_output.LayerNorm."),
]
_PREFIXES = [
    ("vilbert.embeddings.layer_norm.", "bert.embeddings.LayerNorm."),
    ("vilbert.embeddings.", "bert.embeddings."),
    ("vilbert.image_embeddings.feat_fc.", "bert.v_embeddings.image_embeddings."),
    ("vilbert.image_embeddings.loc_fc.", "bert.v_embeddings.image_location_embeddings."),
    ("vilbert.image_embeddings.layer_norm.", "bert.v_embeddings.LayerNorm."),
    ("vilbert.text_pooler.", "bert.t_pooler."),
    ("vilbert.vision_pooler.", "bert.v_pooler."),
    ("mlm_head.transform.dense.", "cls.predictions.transform.dense."),
    ("mlm_head.transform.layer_norm.", "cls.predictions.transform.LayerNorm."),
    ("mlm_head.bias", "cls.predictions.bias"),
    ("region_head.transform.dense.", "cls.imagePredictions.transform.dense."),
    ("region_head.transform.layer_norm.", "cls.imagePredictions.transform.LayerNorm."),
    ("region_head.decoder.", "cls.imagePredictions.decoder."),
    ("itm_head.", "cls.bi_seq_relationship."),
    ("answer_head.dense.", "vil_prediction.logit_fc.0."),
    ("answer_head.layer_norm.", "vil_prediction.logit_fc.2."),
    ("answer_head.classifier.", "vil_prediction.logit_fc.3."),
    # NLVR2Model's pair head is the reference's NLVR2 head: SimpleClassifier(2 Hb, 2 Hb, 2) on the two pooled vectors
    ("pair_head.dense.", "vil_binary_prediction.logit_fc.0."),
    ("pair_head.layer_norm.", "vil_binary_prediction.logit_fc.2."),
    ("pair_head.classifier.", "vil_binary_prediction.logit_fc.3."),
]
TIED = {"cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"}
REGION_DECODER = ("region_head.decoder.weight", "region_head.decoder.bias")  # rows: background last (ours)
UNUSED_BY_REFERENCE = re.compile(r"^bert\.encoder\.c_layer\.\d+\.biOutput\.q_dense[12]\.(weight|bias)$")
OTHER_TASK_HEADS = (
    "cls.",
    "vil_prediction_gqa.",
    "vil_binary_prediction.",
    "vil_logit.",
    "vil_tri_prediction.",
    "vision_logit.",
    "linguisic_logit.",
)


def to_reference(key: str) -> str:
    """One of our full keys (``vilbert.*`` for the encoder, head keys otherwise) -> vilbert-multi-task's name."""
    m = _LAYER_RE.match(key)
    if m:
        group, idx, sub = m.groups()
        table = _CO_LAYER if group == "co_layers" else _BERT_LAYER
        return f"bert.encoder.{_GROUP[group]}.{idx}." + prefix_table(sub, table, "ViLBERT")
    return prefix_table(key, _PREFIXES, "ViLBERT")


def region_rows_to_ours(t: torch.Tensor) -> torch.Tensor:
    """Reference rows (background, class 0, .., class C-1) -> ours (class 0, .., class C-1, background)."""
    return torch.cat([t[1:], t[:1]])


def region_rows_to_reference(t: torch.Tensor) -> torch.Tensor:
    """Our rows (class 0, .., class C-1, background) -> the reference's (background, class 0, .., class C-1)."""
    return torch.cat([t[-1:], t[:-1]])


def detect_file(keys: set[str]) -> str | None:
    return "vilbert" if any(".v_embeddings." in k or k.startswith("v_embeddings.") for k in keys) else None


def _count(ref: dict[str, torch.Tensor], group: str) -> int:
    pat = re.compile(rf"^bert\.encoder\.{group}\.(\d+)\.")
    idx = {int(m.group(1)) for k in ref if (m := pat.match(k))}
    return max(idx) + 1 if idx else 0


def infer_config(ref: dict[str, torch.Tensor], base: VilbertConfig | None, source: str) -> VilbertConfig:
    """Sizes from the tensors; head counts and the schedule from ``base``."""

    def shape(key: str) -> tuple[int, ...]:
        if key not in ref:
            raise CheckpointError(f"{source}: no {key!r}: not a vilbert-multi-task checkpoint?")
        return tuple(ref[key].shape)

    vocab, hidden = shape("bert.embeddings.word_embeddings.weight")
    v_hidden, feat = shape("bert.v_embeddings.image_embeddings.weight")
    changes: dict[str, Any] = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        visual_feat_dim=feat,
        v_hidden_size=v_hidden,
        max_position_embeddings=shape("bert.embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("bert.embeddings.token_type_embeddings.weight")[0],
        num_hidden_layers=_count(ref, "layer"),
        v_num_hidden_layers=_count(ref, "v_layer"),
        intermediate_size=shape("bert.encoder.layer.0.intermediate.dense.weight")[0],
        v_intermediate_size=shape("bert.encoder.v_layer.0.intermediate.dense.weight")[0],
        bi_hidden_size=shape("bert.encoder.c_layer.0.biattention.query1.weight")[0],
    )
    if "cls.imagePredictions.decoder.weight" in ref:
        changes["num_object_labels"] = shape("cls.imagePredictions.decoder.weight")[0]
    base = base or VilbertConfig()
    if not isinstance(base, VilbertConfig):
        raise CheckpointError(f"{source}: --config must be a ViLBERT config, got {type(base).__name__}")
    if _count(ref, "c_layer") != len(base.v_biattention_id):
        raise CheckpointError(
            f"{source}: {_count(ref, 'c_layer')} co-attention layers, the config's schedule has "
            f"{len(base.v_biattention_id)} (v_biattention_id / t_biattention_id)"
        )
    try:
        return base.replace(**changes)
    except ValueError as e:
        raise CheckpointError(f"{source}: {e}") from None


def read_file(path: Path, fmt: str, state: dict[str, torch.Tensor], base: Any | None) -> Checkpoint:
    ref = {re.sub(r"(^|\.)module\.", r"\1", k): v for k, v in state.items()}  # DataParallel wrappers
    config = infer_config(ref, base, str(path))
    objectives = None
    if "vil_prediction.logit_fc.3.weight" in ref:
        cls, num_answers = VilbertForVQA, int(ref["vil_prediction.logit_fc.3.weight"].shape[0])
        keys = our_key_names(cls, config, num_answers)
    elif "vil_binary_prediction.logit_fc.3.weight" in ref:
        cls, num_answers = NLVR2Model, None
        keys = our_key_names(cls, config)
    elif any(k.startswith("cls.") for k in ref):
        cls, num_answers = VilbertForPreTraining, None
        objectives = PretrainObjectives(task_mask_lm=True, task_matched=True, task_region_kl=True)
        keys = our_key_names(cls, config, objectives)
    else:
        cls, num_answers = VilbertModel, None
        keys = ["vilbert." + k for k in our_key_names(cls, config)]
    state_ours, unused = import_state(ref, keys, to_reference, TIED)
    for k in REGION_DECODER:
        if k in state_ours:
            state_ours[k] = region_rows_to_ours(state_ours[k])
    dropped = [k for k in unused if UNUSED_BY_REFERENCE.match(k)]
    if cls in (VilbertForVQA, NLVR2Model):
        dropped += [k for k in unused if k.startswith(OTHER_TASK_HEADS)]
    unexpected = [k for k in unused if k not in set(dropped)]
    return Checkpoint(
        config,
        cls,
        state_ours,
        objectives,
        num_answers,
        {},
        str(path),
        unexpected,
        {k: to_reference(k) for k in keys},
        sorted(dropped),
    )


def reference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our model's tensors under vilbert-multi-task's names (the region decoder's rows in its order, background
    first), with the tensors its classes create but never read (``biOutput.q_dense*``) as zeros so its strict
    ``load_state_dict`` accepts them."""
    state = model.state_dict()
    if type(model) is VilbertModel:
        state = {"vilbert." + k: v for k, v in state.items()}
    out = export_state(state, to_reference, TIED if hasattr(model, "mlm_head") else None)
    for k in REGION_DECODER:
        if k in state:
            out[to_reference(k)] = region_rows_to_reference(out[to_reference(k)])
    cfg = model.config
    for k in range(len(cfg.v_biattention_id)):
        for name, width in (("q_dense1", cfg.v_hidden_size), ("q_dense2", cfg.hidden_size)):
            out[f"bert.encoder.c_layer.{k}.biOutput.{name}.weight"] = torch.zeros(width, cfg.bi_hidden_size)
            out[f"bert.encoder.c_layer.{k}.biOutput.{name}.bias"] = torch.zeros(width)
    return out


def export_file(model: nn.Module, out_path: str | Path) -> Path:
    """``torch.save`` of the reference-named state dict (the repository loads it with ``from_pretrained``)."""
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        torch.save(reference_state(model), str(tmp))
    return out
