"""Checkpoint files: our format, the original LXMERT .pth files, transformers directories.

Our format is a directory with ``model_config.json`` (architecture, LxmertConfig, answer count, metadata)
and ``model.safetensors`` (our parameter names). ``load_model`` reads any supported format.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io_utils import atomic_path, atomic_write_json
from .config import LxmertConfig
from .convert import (
    CheckpointError,
    LoadReport,
    config_from_transformers,
    config_to_transformers,
    infer_config,
    load_state,
    normalize_reference_keys,
    ours_to_reference_state,
    reference_aliases,
    reference_to_ours,
)
from .model import LxmertModel
from .pretraining import LxmertForPreTraining
from .nlvr2 import LxmertForNLVR2
from .vqa import LxmertForVQA

log = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "lxmert-repro"
FORMAT_VERSION = 1
FORMATS = ("ours", "transformers", "lxmert", "lxmert-vqa")
ARCHITECTURES: dict[str, type[nn.Module]] = {
    "LxmertModel": LxmertModel,
    "LxmertForPreTraining": LxmertForPreTraining,
    "LxmertForVQA": LxmertForVQA,
    "LxmertForNLVR2": LxmertForNLVR2,
}
_TRANSFORMERS_CLASS = {
    "LxmertModel": "LxmertModel",
    "LxmertForPreTraining": "LxmertForPreTraining",
    "LxmertForVQA": "LxmertForQuestionAnswering",
}


@dataclass
class Checkpoint:
    """A checkpoint read into memory, whatever its format: tensors under our full names (``lxmert.*``)."""

    config: LxmertConfig
    architecture: str
    state: dict[str, torch.Tensor]
    num_answers: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    unexpected: list[str] = field(default_factory=list)  # source tensors with no place in our layout
    aliases: dict[str, str] = field(default_factory=dict)  # our key -> source name, for error messages


def _architecture_of(model: nn.Module) -> str:
    for name, cls in ARCHITECTURES.items():
        if type(model) is cls:
            return name
    raise TypeError(f"not an LXMERT model class: {type(model).__name__}")


# ----------------------------------------------------------------------------------------------------
# Our format
# ----------------------------------------------------------------------------------------------------

def save_model(model: nn.Module, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``out_dir`` (created): weights first, then the config that marks the checkpoint complete."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = _architecture_of(model)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT_NAME, "architecture": arch})
    atomic_write_json(out / CONFIG_FILE, {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "architecture": arch,
        "num_answers": getattr(model, "num_answers", None),
        "config": model.config.to_dict(),
        "metadata": metadata or {},
    })
    return out


def _read_ours(path: Path) -> Checkpoint:
    meta_path, weights = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(f"{path}: no {CONFIG_FILE} (not a checkpoint written by save_model)")
    if not weights.is_file():
        raise FileNotFoundError(f"{path}: {CONFIG_FILE} present but {WEIGHTS_FILE} missing")
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{meta_path}: not valid JSON ({e})") from None
    for key in ("architecture", "config"):
        if key not in meta:
            raise CheckpointError(f"{meta_path}: field {key!r} missing")
    arch = meta["architecture"]
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"{meta_path}: architecture {arch!r} unknown; expected one of {list(ARCHITECTURES)}")
    config = LxmertConfig.from_dict(meta["config"], source=f"{meta_path}: config")
    state = load_file(str(weights))
    if arch == "LxmertModel":
        state = {"lxmert." + k: v for k, v in state.items()}
    return Checkpoint(config, arch, state, meta.get("num_answers"), meta.get("metadata") or {}, str(path))


# ----------------------------------------------------------------------------------------------------
# Reference formats
# ----------------------------------------------------------------------------------------------------

SUPPORTED = (f"a model directory of ours ({CONFIG_FILE} + {WEIGHTS_FILE})",
             "a transformers save_pretrained directory (config.json + weights)",
             "an original LXMERT .pth state dict (pretraining or VQA), loaded with torch.load(weights_only=True)",
             "a .safetensors state dict")


def _load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch's unpickler / safetensors' header parser: the bytes are not a checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: not a checkpoint of a supported format (tried: {'; '.join(SUPPORTED)}); "
                              f"reading it failed with {type(e).__name__}: {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor)")
    return obj


def _transformers_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return _load_tensor_file(path / name)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(path / shard)))
        return state
    raise FileNotFoundError(f"{path}: no model.safetensors, pytorch_model.bin or model.safetensors.index.json")


def _from_reference(ref: dict[str, torch.Tensor], config: LxmertConfig, arch: str, num_answers: int | None,
                    source: str) -> Checkpoint:
    state, unused = reference_to_ours(ref, config)
    return Checkpoint(config, arch, state, num_answers, {}, source, unused, reference_aliases(config))


def _read_transformers(path: Path) -> Checkpoint:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (not a transformers save_pretrained directory)")
    values = json.loads(cfg_path.read_text())
    config = config_from_transformers(values, source=str(cfg_path))
    ref = normalize_reference_keys(_transformers_weights(path), "transformers")
    archs = values.get("architectures") or []
    if "LxmertForQuestionAnswering" in archs:
        arch, num_answers = "LxmertForVQA", config.num_qa_labels
    elif "LxmertForPreTraining" in archs or any(k.startswith("cls.") for k in ref):
        arch, num_answers = "LxmertForPreTraining", None
    elif any(k.startswith("answer_head.") for k in ref):
        arch, num_answers = "LxmertForVQA", config.num_qa_labels
    else:
        arch, num_answers = "LxmertModel", None
    return _from_reference(ref, config, arch, num_answers, str(path))


def _read_original(path: Path, fmt: str, base: LxmertConfig | None) -> Checkpoint:
    ref = normalize_reference_keys(_load_tensor_file(path), fmt)
    if not any(k.startswith("lxmert.") for k in ref):
        raise CheckpointError(f"{path}: no encoder tensors ({'lxrt_encoder.model.bert.*' if fmt == 'lxmert-vqa' else 'module.bert.*'}) found")
    config = infer_config(ref, base, source=str(path))
    if fmt == "lxmert-vqa":
        if "answer_head.logit_fc.3.weight" not in ref:
            raise CheckpointError(f"{path}: fine-tuned VQA checkpoint without logit_fc.3.weight")
        num_answers = int(ref["answer_head.logit_fc.3.weight"].shape[0])
        keep = base or LxmertConfig()
        config = config.replace(task_qa=keep.task_qa, num_qa_labels=keep.num_qa_labels)
        return _from_reference(ref, config, "LxmertForVQA", num_answers, str(path))
    arch = "LxmertForPreTraining" if any(k.startswith("cls.") for k in ref) else "LxmertModel"
    return _from_reference(ref, config, arch, None, str(path))


def detect_format(path: str | os.PathLike) -> str:
    p = Path(path)
    if p.is_dir():
        if (p / CONFIG_FILE).is_file():
            return "ours"
        if (p / "config.json").is_file():
            return "transformers"
        raise CheckpointError(f"{p}: directory has neither {CONFIG_FILE} (ours) nor config.json (transformers)")
    if not p.exists():
        raise FileNotFoundError(f"{p}: checkpoint not found")
    keys = _load_tensor_file(p).keys()
    return "lxmert-vqa" if any("lxrt_encoder." in k for k in keys) else "lxmert"


def read_checkpoint(path: str | os.PathLike, fmt: str = "auto", config: LxmertConfig | None = None) -> Checkpoint:
    """Read any supported checkpoint. ``config`` fills what an original .pth cannot tell (attention heads, losses)."""
    p = Path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    if fmt == "ours":
        return _read_ours(p)
    if fmt == "transformers":
        return _read_transformers(p)
    if fmt in ("lxmert", "lxmert-vqa"):
        if p.is_dir():
            raise CheckpointError(f"{p}: the original {fmt} format is a single .pth file, got a directory")
        return _read_original(p, fmt, config)
    raise ValueError(f"unknown checkpoint format {fmt!r}; expected 'auto' or one of {FORMATS}")


# ----------------------------------------------------------------------------------------------------
# Building models
# ----------------------------------------------------------------------------------------------------

def model_from_checkpoint(
    ckpt: Checkpoint,
    model_class: type[nn.Module] | str | None = None,
    strict: bool = True,
    num_answers: int | None = None,
) -> nn.Module:
    """Instantiate ``model_class`` (default: the checkpoint's own) and load the checkpoint into it.

    strict=False loads what fits (e.g. a pretraining checkpoint into LxmertForVQA: heads dropped, the
    answer classifier left at its init) and leaves the report in ``model.load_report``.
    """
    if model_class is None:
        model_class = ckpt.architecture
    if isinstance(model_class, str):
        if model_class not in ARCHITECTURES:
            raise ValueError(f"unknown model class {model_class!r}; expected one of {list(ARCHITECTURES)}")
        model_class = ARCHITECTURES[model_class]
    if model_class is LxmertForVQA:
        n = num_answers or ckpt.num_answers
        if n is None:
            raise ValueError(f"{ckpt.source}: LxmertForVQA needs num_answers (the checkpoint has no VQA head)")
        model = LxmertForVQA(ckpt.config, n)
    else:
        model = model_class(ckpt.config)
    report = load_state(model, ckpt.state, strict=strict, source=ckpt.source, extra_unexpected=ckpt.unexpected,
                        aliases=ckpt.aliases)
    if not report.ok:
        log.warning("partial load: %s", report.describe(ckpt.source))
    model.load_report = report  # type: ignore[attr-defined]
    return model


def load_model(
    path: str | os.PathLike,
    model_class: type[nn.Module] | str | None = None,
    *,
    fmt: str = "auto",
    strict: bool = True,
    config: LxmertConfig | None = None,
    num_answers: int | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load a model from our directory, a transformers directory or an original LXMERT .pth (auto-detected)."""
    model = model_from_checkpoint(read_checkpoint(path, fmt, config), model_class, strict, num_answers)
    return model.to(map_location)


# ----------------------------------------------------------------------------------------------------
# Export to transformers
# ----------------------------------------------------------------------------------------------------

def export_transformers(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write a directory that ``transformers.<LxmertForPreTraining|LxmertForQuestionAnswering|LxmertModel>
    .from_pretrained`` loads (our config is carried along under ``lxmert_repro_config``)."""
    import transformers

    arch = _architecture_of(model)
    if arch not in _TRANSFORMERS_CLASS:
        raise CheckpointError(f"transformers has no class for {arch}; only {sorted(_TRANSFORMERS_CLASS)} export")
    tcfg = config_to_transformers(model.config, getattr(model, "num_answers", None))
    tcfg.architectures = [_TRANSFORMERS_CLASS[arch]]
    with torch.random.fork_rng():
        tm = getattr(transformers, _TRANSFORMERS_CLASS[arch])(tcfg)
    state = {k: v.detach().cpu() for k, v in ours_to_reference_state(model).items()}
    result = tm.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"export to transformers.{_TRANSFORMERS_CLASS[arch]}: missing {result.missing_keys}, "
            f"unexpected {result.unexpected_keys}"
        )
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tm.save_pretrained(str(tmp))
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    src_format: str = "auto",
    dst_format: str = "ours",
    config: LxmertConfig | None = None,
    strict: bool = True,
    model_class: str | None = None,
    num_answers: int | None = None,
) -> LoadReport:
    model = model_from_checkpoint(read_checkpoint(src, src_format, config), model_class, strict, num_answers)
    if dst_format == "ours":
        save_model(model, dst, metadata={"converted_from": str(src), "source_format": src_format})
    elif dst_format == "transformers":
        export_transformers(model, dst)
    else:
        raise ValueError(f"unknown output format {dst_format!r}; expected 'ours' or 'transformers'")
    return model.load_report
