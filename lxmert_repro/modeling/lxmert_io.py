"""LXMERT's checkpoint adapters: the original airsplay/lxmert .pth files (pretraining ``module.bert.*`` and
fine-tuned VQA ``lxrt_encoder.model.bert.*``) and transformers' Lxmert* directories, both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import Checkpoint, save_transformers_dir
from .config import LxmertConfig
from .convert import (
    CheckpointError,
    config_from_transformers,
    config_to_transformers,
    infer_config,
    normalize_reference_keys,
    ours_to_reference_state,
    reference_aliases,
    reference_to_ours,
)
from .model import LxmertModel
from .objectives import PretrainObjectives
from .pretraining import LxmertForPreTraining
from .vqa import LxmertForVQA

TRANSFORMERS_MODEL_TYPE = "lxmert"
FILE_FORMATS = ("lxmert", "lxmert-vqa")
FILE_DESCRIPTION = "an original LXMERT .pth state dict (airsplay/lxmert: pretraining or VQA)"
_TRANSFORMERS_CLASS = {
    LxmertModel: "LxmertModel",
    LxmertForPreTraining: "LxmertForPreTraining",
    LxmertForVQA: "LxmertForQuestionAnswering",
}


def detect_file(keys: set[str]) -> str | None:
    """The file format of a state dict with these keys, if it is one of LXMERT's."""
    if any("lxrt_encoder." in k for k in keys):
        return "lxmert-vqa"
    if any(".encoder.visn_fc." in k or ".encoder.x_layers." in k for k in keys):  # LXMERT's own modules
        return "lxmert"
    return None


def _from_reference(
    ref: dict[str, torch.Tensor],
    config: LxmertConfig,
    cls: type[nn.Module],
    objectives: PretrainObjectives | None,
    num_answers: int | None,
    source: str,
) -> Checkpoint:
    state, unused = reference_to_ours(ref, config)
    return Checkpoint(
        config,
        cls,
        state,
        objectives if cls is LxmertForPreTraining else None,
        num_answers,
        {},
        source,
        unused,
        reference_aliases(config),
    )


def read_transformers(path: Path, values: dict[str, Any], weights: dict[str, torch.Tensor]) -> Checkpoint:
    config, objectives = config_from_transformers(values, source=str(path / "config.json"))
    ref = normalize_reference_keys(weights, "transformers")
    archs = values.get("architectures") or []
    if "LxmertForQuestionAnswering" in archs:
        cls, num_answers = LxmertForVQA, config.num_qa_labels
    elif "LxmertForPreTraining" in archs or any(k.startswith("cls.") for k in ref):
        cls, num_answers = LxmertForPreTraining, None
    elif any(k.startswith("answer_head.") for k in ref):
        cls, num_answers = LxmertForVQA, config.num_qa_labels
    else:
        cls, num_answers = LxmertModel, None
    return _from_reference(ref, config, cls, objectives, num_answers, str(path))


def read_file(path: Path, fmt: str, state: dict[str, torch.Tensor], base: Any | None) -> Checkpoint:
    """An original .pth. ``base`` (an LxmertConfig) fills what the tensors cannot tell (attention heads)."""
    if base is not None and not isinstance(base, LxmertConfig):
        raise CheckpointError(f"{path}: --config must be an LXMERT config for a {fmt} file, got {type(base).__name__}")
    ref = normalize_reference_keys(state, fmt)
    if not any(k.startswith("lxmert.") for k in ref):
        raise CheckpointError(
            f"{path}: no encoder tensors ({'lxrt_encoder.model.bert.*' if fmt == 'lxmert-vqa' else 'module.bert.*'}) found"
        )
    config, objectives = infer_config(ref, base, source=str(path))
    if fmt == "lxmert-vqa":
        if "answer_head.logit_fc.3.weight" not in ref:
            raise CheckpointError(f"{path}: fine-tuned VQA checkpoint without logit_fc.3.weight")
        num_answers = int(ref["answer_head.logit_fc.3.weight"].shape[0])
        config = config.replace(num_qa_labels=(base or LxmertConfig()).num_qa_labels)
        return _from_reference(ref, config, LxmertForVQA, None, num_answers, str(path))
    cls = LxmertForPreTraining if any(k.startswith("cls.") for k in ref) else LxmertModel
    return _from_reference(ref, config, cls, objectives, None, str(path))


def export_transformers(model: nn.Module, out_dir: str | Path) -> Path:
    """A directory that ``transformers.<LxmertForPreTraining|LxmertForQuestionAnswering|LxmertModel>
    .from_pretrained`` loads (our config is carried along under ``lxmert_repro_config``)."""
    import transformers

    if type(model) not in _TRANSFORMERS_CLASS:
        raise CheckpointError(
            f"transformers has no class for {type(model).__name__}; only "
            f"{sorted(c.__name__ for c in _TRANSFORMERS_CLASS)} export"
        )
    name = _TRANSFORMERS_CLASS[type(model)]
    tcfg = config_to_transformers(model.config, getattr(model, "num_answers", None), getattr(model, "objectives", None))
    tcfg.architectures = [name]
    with torch.random.fork_rng():
        tm = getattr(transformers, name)(tcfg)
    state = {k: v.detach().cpu() for k, v in ours_to_reference_state(model).items()}
    result = tm.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"export to transformers.{name}: missing {result.missing_keys}, unexpected {result.unexpected_keys}"
        )
    return save_transformers_dir(tm, out_dir)
