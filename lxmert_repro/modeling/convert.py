"""State-dict conversion between our layout and the reference layout (original LXMERT / transformers).

Every tensor is accounted for: a reference tensor nobody consumes is "unexpected", a parameter of ours that
receives nothing is "missing", a tensor of the wrong shape is "mismatched"; in strict mode any of these is a
``CheckpointError`` naming them. Non-strict loading (e.g. dropping pretraining heads to fine-tune) loads what
fits and returns the report.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .config import LxmertConfig
from .keymap import TIED_DECODER_KEY, WORD_EMBEDDINGS_KEY, ours_to_reference
from .objectives import PretrainObjectives, split_objectives

REFERENCE_SOURCES = ("lxmert", "lxmert-vqa", "transformers")


class CheckpointError(ValueError):
    """A checkpoint does not fit the model: names the offending keys."""


@dataclass
class LoadReport:
    missing: list[str] = field(default_factory=list)  # model parameters that got no tensor
    unexpected: list[str] = field(default_factory=list)  # checkpoint tensors the model has no place for
    mismatched: list[str] = field(default_factory=list)  # "key: checkpoint (a, b) vs model (c, d)"
    dropped: list[str] = field(default_factory=list)  # checkpoint tensors known not to belong to this model

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def describe(self, source: str = "checkpoint") -> str:
        parts = []
        for label, keys in (
            ("missing", self.missing),
            ("unexpected", self.unexpected),
            ("wrong shape", self.mismatched),
            ("dropped (not this model's)", self.dropped),
        ):
            if keys:
                shown = ", ".join(keys[:20]) + (f", ... ({len(keys)} in all)" if len(keys) > 20 else "")
                parts.append(f"{label}: {shown}")
        if not (self.missing or self.unexpected or self.mismatched):
            parts.insert(0, "all tensors matched")
        return f"{source}: " + "; ".join(parts)


# ----------------------------------------------------------------------------------------------------
# Source layouts -> the reference layout (transformers' LxmertForPreTraining names)
# ----------------------------------------------------------------------------------------------------


def normalize_reference_keys(state: Mapping[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Rename a checkpoint's keys into the reference layout.

    lxmert:       original pretraining (``module.bert.*``, heads ``cls.*``, ``obj_predict_head.*``, ``answer_head.*``,
                  with or without DataParallel's ``module.``)
    lxmert-vqa:   original fine-tuned VQA (``lxrt_encoder.model.bert.*``, ``logit_fc.*``)
    transformers: LxmertForPreTraining / LxmertForQuestionAnswering (``lxmert.*``) or LxmertModel (no prefix)
    """
    if source not in REFERENCE_SOURCES:
        raise ValueError(f"unknown checkpoint source {source!r}; expected one of {REFERENCE_SOURCES}")
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        k = re.sub(r"(^|\.)module\.", r"\1", key)  # DataParallel wrappers
        if source == "lxmert":
            k = "lxmert." + k[len("bert.") :] if k.startswith("bert.") else k
        elif source == "lxmert-vqa":
            if k.startswith("lxrt_encoder.model.bert."):
                k = "lxmert." + k[len("lxrt_encoder.model.bert.") :]
            elif k.startswith("logit_fc."):
                k = "answer_head." + k
        else:
            if k.split(".", 1)[0] in ("embeddings", "encoder", "pooler"):
                k = "lxmert." + k  # a bare LxmertModel
        if k in out:
            raise CheckpointError(f"key {key!r} collides with another key after renaming to {k!r}")
        out[k] = value
    return out


def our_key_names(config: LxmertConfig) -> list[str]:
    """All parameter names of a full LxmertForPreTraining of this size (built on the meta device: no memory)."""
    from .pretraining import LxmertForPreTraining

    with torch.device("meta"):
        model = LxmertForPreTraining(config, PretrainObjectives())
    return list(model.state_dict().keys())


def reference_to_ours(
    ref_state: Mapping[str, torch.Tensor], config: LxmertConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference-layout tensors -> our names. Returns (our state, unconsumed reference keys)."""
    ours: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key in our_key_names(config):
        ref = ours_to_reference(key)
        if ref in ref_state:
            ours[key] = ref_state[ref]
            used.add(ref)
    if TIED_DECODER_KEY in ref_state:
        used.add(TIED_DECODER_KEY)
        dec, emb = ref_state[TIED_DECODER_KEY], ref_state.get(WORD_EMBEDDINGS_KEY)
        if emb is not None and (dec.shape != emb.shape or not torch.equal(dec, emb)):
            raise CheckpointError(
                f"{TIED_DECODER_KEY} differs from {WORD_EMBEDDINGS_KEY}: the MLM decoder must be tied to the "
                "word embeddings (as in LXMERT)"
            )
    unused = sorted(k for k in ref_state if k not in used)
    return ours, unused


def reference_aliases(config: LxmertConfig) -> dict[str, str]:
    """Our key -> its reference name, for error messages."""
    return {k: ours_to_reference(k) for k in our_key_names(config)}


def ours_to_reference_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our model's tensors in the reference layout (LxmertModel exports without the ``lxmert.`` prefix)."""
    from .model import LxmertModel

    state = model.state_dict()
    bare = isinstance(model, LxmertModel)
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ref = ours_to_reference("lxmert." + key if bare else key)
        out[ref[len("lxmert.") :] if bare else ref] = value.contiguous()
    if hasattr(model, "mlm_head"):
        out[TIED_DECODER_KEY] = out[WORD_EMBEDDINGS_KEY]
    return out


# ----------------------------------------------------------------------------------------------------
# Loading a state (our names) into a model, with the report
# ----------------------------------------------------------------------------------------------------


def load_state(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    strict: bool = True,
    source: str = "checkpoint",
    extra_unexpected: list[str] | None = None,
    aliases: Mapping[str, str] | None = None,
) -> LoadReport:
    """Copy ``state`` (our full names: ``<encoder prefix>.*`` for the encoder, e.g. ``lxmert.*``) into ``model``.

    strict: any missing / unexpected / wrong-shape tensor raises CheckpointError naming them all
    (``aliases``: our key -> the source's own name, shown next to missing keys).
    Not strict: loads every tensor that fits and returns the report.
    """
    bare = getattr(model, "ROLE", "") == "encoder"
    prefix = model.config.ENCODER_PREFIX + "." if bare else ""  # the bare encoder has no prefix
    if bare:
        heads = [k for k in state if not k.startswith(prefix)]
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    else:
        heads = []
    own = model.state_dict()
    report = LoadReport(unexpected=sorted(heads + list(extra_unexpected or [])))
    to_load: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
        elif tuple(value.shape) != tuple(own[key].shape):
            report.mismatched.append(f"{key}: checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)}")
        else:
            to_load[key] = value
    report.missing = sorted(
        f"{k} (source name {aliases[prefix + k]})" if aliases and prefix + k in aliases else k
        for k in own
        if k not in state
    )
    report.unexpected.sort()
    if strict and not report.ok:
        raise CheckpointError(report.describe(source) + " (pass strict=False for a partial load)")
    with torch.no_grad():
        for key, value in to_load.items():
            own[key].copy_(value)
    return report


# ----------------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------------

_SHARED_CONFIG_FIELDS = (
    "vocab_size",
    "hidden_size",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "max_position_embeddings",
    "type_vocab_size",
    "initializer_range",
    "l_layers",
    "r_layers",
    "x_layers",
    "visual_feat_dim",
    "visual_pos_dim",
    "num_object_labels",
    "num_attr_labels",
    "num_qa_labels",
    "visual_loss_normalizer",
    "task_mask_lm",
    "task_matched",
    "task_obj_predict",
    "task_qa",
    "visual_obj_loss",
    "visual_attr_loss",
    "visual_feat_loss",
)
OUR_CONFIG_ATTR = "lxmert_repro_config"  # our full config, carried inside an exported transformers config


OUR_OBJECTIVES_ATTR = "lxmert_repro_objectives"


def config_from_transformers(values: Mapping, source: str = "config.json") -> tuple[LxmertConfig, PretrainObjectives]:
    """A transformers LxmertConfig (as a dict) -> ours and the objectives (our extra fields restored if we
    exported it; transformers keeps LXMERT's task switches in the model config)."""
    if values.get("model_type") not in (None, "lxmert"):
        raise CheckpointError(f"{source}: model_type is {values.get('model_type')!r}, expected 'lxmert'")
    base, objectives = split_objectives(values.get(OUR_CONFIG_ATTR) or {})
    objectives.update(values.get(OUR_OBJECTIVES_ATTR) or {})
    for name in _SHARED_CONFIG_FIELDS:
        if name in values:
            target = objectives if hasattr(PretrainObjectives, name) else base
            target[name] = values[name]
    if base.get("hidden_act") == "gelu_python":
        base["hidden_act"] = "gelu"
    return (
        LxmertConfig.from_dict(base, source=source),
        PretrainObjectives.from_dict(objectives, source=f"{source}: objectives"),
    )


def config_to_transformers(
    config: LxmertConfig, num_qa_labels: int | None = None, objectives: PretrainObjectives | None = None
):
    import transformers

    objectives = objectives or PretrainObjectives()
    values = {
        name: getattr(objectives if hasattr(objectives, name) else config, name) for name in _SHARED_CONFIG_FIELDS
    }
    if num_qa_labels is not None:
        values["num_qa_labels"] = num_qa_labels
    tcfg = transformers.LxmertConfig(**values)
    setattr(tcfg, OUR_CONFIG_ATTR, config.to_dict())
    setattr(tcfg, OUR_OBJECTIVES_ATTR, objectives.to_dict())
    return tcfg


BASE_HIDDEN_SIZE, BASE_HEADS = 768, 12  # LXMERT's only published size (airsplay/lxmert src/lxrt/modeling.py)


def infer_config(
    ref_state: Mapping[str, torch.Tensor], base: LxmertConfig | None = None, source: str = "checkpoint"
) -> tuple[LxmertConfig, PretrainObjectives]:
    """Sizes and present heads read from the tensors of a reference-layout checkpoint (the original has no
    config file): the architecture config and the objectives those heads serve.

    The number of attention heads cannot be read from shapes: it comes from ``base``. Without one, only the
    published size (hidden 768: 12 heads) is assumed; any other hidden size is an error naming ``source``,
    since a guessed head count loads without complaint and computes something else.
    """

    def shape(key: str) -> tuple[int, ...]:
        if key not in ref_state:
            raise CheckpointError(f"checkpoint has no {key!r}: not an LXMERT checkpoint?")
        return tuple(ref_state[key].shape)

    def count(group: str) -> int:
        pat = re.compile(rf"^lxmert\.encoder\.{group}\.(\d+)\.")
        idx = {int(m.group(1)) for k in ref_state if (m := pat.match(k))}
        return max(idx) + 1 if idx else 0

    vocab, hidden = shape("lxmert.embeddings.word_embeddings.weight")
    changes: dict = dict(
        vocab_size=vocab,
        hidden_size=hidden,
        max_position_embeddings=shape("lxmert.embeddings.position_embeddings.weight")[0],
        type_vocab_size=shape("lxmert.embeddings.token_type_embeddings.weight")[0],
        visual_feat_dim=shape("lxmert.encoder.visn_fc.visn_fc.weight")[1],
        visual_pos_dim=shape("lxmert.encoder.visn_fc.box_fc.weight")[1],
        l_layers=count("layer"),
        r_layers=count("r_layers"),
        x_layers=count("x_layers"),
    )
    for probe in (
        "lxmert.encoder.layer.0.intermediate.dense.weight",
        "lxmert.encoder.x_layers.0.lang_inter.dense.weight",
    ):
        if probe in ref_state:
            changes["intermediate_size"] = shape(probe)[0]
            break
    decoders = {n: f"obj_predict_head.decoder_dict.{n}.weight" for n in ("obj", "attr", "feat")}
    has = {n: k in ref_state for n, k in decoders.items()}
    heads: dict = {"task_obj_predict": any(has.values())}
    if heads["task_obj_predict"]:
        heads.update(visual_obj_loss=has["obj"], visual_attr_loss=has["attr"], visual_feat_loss=has["feat"])
        if has["obj"]:
            changes["num_object_labels"] = shape(decoders["obj"])[0]
        if has["attr"]:
            changes["num_attr_labels"] = shape(decoders["attr"])[0]
    heads["task_qa"] = "answer_head.logit_fc.3.weight" in ref_state
    if heads["task_qa"]:
        changes["num_qa_labels"] = shape("answer_head.logit_fc.3.weight")[0]
    if base is None:
        if hidden != BASE_HIDDEN_SIZE:
            raise CheckpointError(
                f"{source}: hidden size {hidden} is not LXMERT's {BASE_HIDDEN_SIZE}, and an original checkpoint does "
                "not record num_attention_heads: give a model config with it (lxmert-convert --config FILE.yaml|json, "
                "or load_model(..., config=LxmertConfig(num_attention_heads=...)))"
            )
        base = LxmertConfig(num_attention_heads=BASE_HEADS)
    if hidden % base.num_attention_heads:
        raise CheckpointError(
            f"hidden size {hidden} is not a multiple of num_attention_heads={base.num_attention_heads}"
        )
    return base.replace(**changes), PretrainObjectives(**heads)
