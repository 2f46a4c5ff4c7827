"""Checkpoint files: our format for every architecture, and dispatch to each architecture's reference formats.

Our format is a directory with ``model_config.json`` and ``model.safetensors`` (our parameter names).
The json records the model class (``model_class``, an import path), its config class and fields, the
pretraining objectives (pretraining models) and the answer count (VQA models), so ``load_model`` rebuilds
any architecture. Version 1 files (LXMERT only: class name in ``architecture``, objective fields inside
``config``) still load. Reference formats (original .pth files, transformers directories) are read and
written by the architecture's adapter module (``ModelConfig.ADAPTERS``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..io_utils import atomic_path, atomic_write_json
from .base import ROLES, ModelBase, ModelConfig, import_path, resolve_class
from .convert import CheckpointError, LoadReport, load_state
from .objectives import PretrainObjectives, split_objectives

log = logging.getLogger(__name__)

CONFIG_FILE = "model_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_NAME = "lxmert-repro"
FORMAT_VERSION = 2
# The modules that read reference formats (one per architecture with such formats), tried in this order
# when a format is detected; each states its transformers ``model_type`` and its file formats.
ADAPTER_MODULES = (
    "lxmert_repro.modeling.lxmert_io",
    "lxmert_repro.modeling.visual_bert.io",
    "lxmert_repro.modeling.vilbert.io",
)
# Version 1 files name an LXMERT class without its module.
_V1_CLASSES = {
    "LxmertModel": "lxmert_repro.modeling.model.LxmertModel",
    "LxmertForPreTraining": "lxmert_repro.modeling.pretraining.LxmertForPreTraining",
    "LxmertForVQA": "lxmert_repro.modeling.vqa.LxmertForVQA",
}
_V1_CONFIG = "lxmert_repro.modeling.config.LxmertConfig"


def adapters() -> list[ModuleType]:
    return [importlib.import_module(m) for m in ADAPTER_MODULES]


def formats() -> tuple[str, ...]:
    """Every format ``read_checkpoint`` takes."""
    return ("ours", "transformers", *(f for a in adapters() for f in a.FILE_FORMATS))


@dataclass
class Checkpoint:
    """A checkpoint read into memory, whatever its format: tensors under our full names (``<prefix>.*``)."""

    config: ModelConfig
    model_class: type[nn.Module]
    state: dict[str, torch.Tensor]
    objectives: PretrainObjectives | None = None  # pretraining models
    num_answers: int | None = None  # VQA models
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    unexpected: list[str] = field(default_factory=list)  # source tensors with no place in our layout
    aliases: dict[str, str] = field(default_factory=dict)  # our key -> source name, for error messages
    dropped: list[str] = field(default_factory=list)  # source tensors known not to belong here (named, not loaded)

    @property
    def architecture(self) -> str:
        return self.model_class.__name__


def _check_model(model: nn.Module) -> ModelBase:
    if not isinstance(model, ModelBase) or not model.ROLE:
        raise TypeError(f"not a model class of this package: {type(model).__name__}")
    return model


# ----------------------------------------------------------------------------------------------------
# Our format
# ----------------------------------------------------------------------------------------------------


def save_model(model: nn.Module, out_dir: str | os.PathLike, metadata: dict[str, Any] | None = None) -> Path:
    """Write ``model`` to ``out_dir`` (created): weights first, then the config that marks the checkpoint complete."""
    model = _check_model(model)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    arch = type(model).__name__
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_FILE) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT_NAME, "architecture": arch})
    objectives = getattr(model, "objectives", None)
    atomic_write_json(
        out / CONFIG_FILE,
        {
            "format": FORMAT_NAME,
            "format_version": FORMAT_VERSION,
            "architecture": arch,
            "model_class": import_path(type(model)),
            "config_class": import_path(type(model.config)),
            "num_answers": getattr(model, "num_answers", None),
            "config": model.config.to_dict(),
            "objectives": objectives.to_dict() if objectives is not None else None,
            "metadata": metadata or {},
        },
    )
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
    values, objectives = dict(meta["config"]), meta.get("objectives")
    if "model_class" in meta:
        class_path, config_path = meta["model_class"], meta.get("config_class")
    else:  # version 1: LXMERT, objective fields inside the config
        if meta["architecture"] not in _V1_CLASSES:
            raise CheckpointError(
                f"{meta_path}: architecture {meta['architecture']!r} unknown; expected one of {list(_V1_CLASSES)}"
            )
        class_path, config_path = _V1_CLASSES[meta["architecture"]], _V1_CONFIG
        values, objectives = split_objectives(values)
    try:
        cls = resolve_class(class_path, ModelBase, f"{meta_path}: model_class")
        config_cls = resolve_class(config_path or "", ModelConfig, f"{meta_path}: config_class")
        config = config_cls.from_dict(values, source=f"{meta_path}: config")
        objectives = PretrainObjectives.from_dict(objectives, f"{meta_path}: objectives") if objectives else None
    except (ValueError, TypeError) as e:
        raise CheckpointError(str(e)) from None
    state = load_file(str(weights))
    if cls.ROLE == "encoder":
        state = {f"{config.ENCODER_PREFIX}.{k}": v for k, v in state.items()}
    return Checkpoint(config, cls, state, objectives, meta.get("num_answers"), meta.get("metadata") or {}, str(path))


# ----------------------------------------------------------------------------------------------------
# Reference formats (dispatch; the readers are the architectures' adapters)
# ----------------------------------------------------------------------------------------------------


def supported() -> list[str]:
    """What ``read_checkpoint`` reads, in words (for the message about a file it cannot read)."""
    return [
        f"a model directory of ours ({CONFIG_FILE} + {WEIGHTS_FILE}, any architecture)",
        "a transformers save_pretrained directory (config.json + weights; model_type "
        + ", ".join(a.TRANSFORMERS_MODEL_TYPE for a in adapters() if hasattr(a, "TRANSFORMERS_MODEL_TYPE"))
        + ")",
        *(a.FILE_DESCRIPTION for a in adapters()),
        "a .safetensors state dict (other state-dict files are read with torch.load(weights_only=True))",
    ]


def load_tensor_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # torch's unpickler / safetensors' header parser: the bytes are not a checkpoint
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(
            f"{path}: not a checkpoint of a supported format (tried: {'; '.join(supported())}); "
            f"reading it failed with {type(e).__name__}: {first}"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: expected a state dict (name -> tensor)")
    return obj


def _transformers_weights(path: Path) -> dict[str, torch.Tensor]:
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return load_tensor_file(path / name)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(path / shard)))
        return state
    raise FileNotFoundError(f"{path}: no model.safetensors, pytorch_model.bin or model.safetensors.index.json")


def _read_transformers(path: Path) -> Checkpoint:
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"{path}: no config.json (not a transformers save_pretrained directory)")
    values = json.loads(cfg_path.read_text())
    model_type = values.get("model_type") or "lxmert"
    for adapter in adapters():
        if getattr(adapter, "TRANSFORMERS_MODEL_TYPE", None) == model_type:
            return adapter.read_transformers(path, values, _transformers_weights(path))
    known = [a.TRANSFORMERS_MODEL_TYPE for a in adapters() if getattr(a, "TRANSFORMERS_MODEL_TYPE", None)]
    raise CheckpointError(f"{cfg_path}: model_type {model_type!r} is not one we read; expected one of {known}")


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
    keys = set(load_tensor_file(p).keys())
    for adapter in adapters():
        fmt = adapter.detect_file(keys)
        if fmt is not None:
            return fmt
    raise CheckpointError(f"{p}: tensor names match none of the file formats {formats()[2:]}")


def read_checkpoint(path: str | os.PathLike, fmt: str = "auto", config: ModelConfig | None = None) -> Checkpoint:
    """Read any supported checkpoint. ``config`` fills what an original .pth cannot tell (attention heads)."""
    p = Path(path)
    fmt = detect_format(p) if fmt == "auto" else fmt
    if fmt == "ours":
        return _read_ours(p)
    if fmt == "transformers":
        return _read_transformers(p)
    for adapter in adapters():
        if fmt in adapter.FILE_FORMATS:
            if p.is_dir():
                raise CheckpointError(f"{p}: the {fmt} format is a single file, got a directory")
            return adapter.read_file(p, fmt, load_tensor_file(p), config)
    raise ValueError(f"unknown checkpoint format {fmt!r}; expected 'auto' or one of {formats()}")


# ----------------------------------------------------------------------------------------------------
# Building models
# ----------------------------------------------------------------------------------------------------


def build_model(
    config: ModelConfig,
    role: str,
    objectives: PretrainObjectives | None = None,
    num_answers: int | None = None,
    source: str = "",
) -> ModelBase:
    """A fresh model of ``config``'s architecture in ``role`` (encoder / pretraining / vqa)."""
    cls = config.model_class(role)
    if role == "vqa":
        if num_answers is None:
            raise ValueError(f"{source}: a VQA model needs num_answers (the checkpoint has no VQA head)")
        return cls(config, num_answers)
    if role == "pretraining":
        return cls(config, objectives)
    return cls(config)


def _role_of(model_class: type[nn.Module] | str | None, ckpt: Checkpoint) -> str:
    """A role name, a model class, or (legacy) a class name of the checkpoint's architecture -> the role."""
    if model_class is None:
        return ckpt.model_class.ROLE
    if isinstance(model_class, str):
        if model_class in ROLES:
            return model_class
        for role, path in ckpt.config.MODEL_CLASSES.items():
            if path.rsplit(".", 1)[-1] == model_class:
                return role
        raise ValueError(
            f"unknown model class {model_class!r} for {type(ckpt.config).__name__}; expected one of "
            f"{list(ROLES)} or {[p.rsplit('.', 1)[-1] for p in ckpt.config.MODEL_CLASSES.values()]}"
        )
    return model_class.ROLE  # type: ignore[attr-defined]


def model_from_checkpoint(
    ckpt: Checkpoint,
    model_class: type[nn.Module] | str | None = None,
    strict: bool = True,
    num_answers: int | None = None,
) -> nn.Module:
    """Build the checkpoint's architecture in the role of ``model_class`` (default: the checkpoint's own; a
    role name, a class, or a class name) and load the checkpoint into it.

    strict=False loads what fits (e.g. a pretraining checkpoint into a VQA model: heads dropped, the
    answer classifier left at its init) and leaves the report in ``model.load_report``.
    """
    role = _role_of(model_class, ckpt)
    model = build_model(ckpt.config, role, ckpt.objectives, num_answers or ckpt.num_answers, ckpt.source)
    report = load_state(
        model, ckpt.state, strict=strict, source=ckpt.source, extra_unexpected=ckpt.unexpected, aliases=ckpt.aliases
    )
    report.dropped = list(ckpt.dropped)
    if not report.ok:
        log.warning("partial load: %s", report.describe(ckpt.source))
    elif report.dropped:
        log.info("%s", report.describe(ckpt.source))
    model.load_report = report  # type: ignore[attr-defined]
    return model


def load_model(
    path: str | os.PathLike,
    model_class: type[nn.Module] | str | None = None,
    *,
    fmt: str = "auto",
    strict: bool = True,
    config: ModelConfig | None = None,
    num_answers: int | None = None,
    map_location: str | torch.device = "cpu",
) -> nn.Module:
    """Load a model from our directory, a transformers directory or an original .pth (auto-detected)."""
    model = model_from_checkpoint(read_checkpoint(path, fmt, config), model_class, strict, num_answers)
    return model.to(map_location)


# ----------------------------------------------------------------------------------------------------
# Export to reference formats
# ----------------------------------------------------------------------------------------------------


def save_transformers_dir(tm: nn.Module, out_dir: str | os.PathLike) -> Path:
    """``tm.save_pretrained`` into ``out_dir`` through a temp dir beside it (no half-written directory)."""
    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tm.save_pretrained(str(tmp))  # type: ignore[operator]
        out.mkdir(exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def _adapter_of(model: nn.Module) -> ModuleType:
    path = _check_model(model).config.ADAPTERS
    if not path:
        raise CheckpointError(f"{type(model).__name__}: its architecture has no reference formats")
    return importlib.import_module(path)


def export_transformers(model: nn.Module, out_dir: str | os.PathLike) -> Path:
    """Write a directory that the matching ``transformers`` class's ``from_pretrained`` loads."""
    adapter = _adapter_of(model)
    if not hasattr(adapter, "export_transformers"):
        raise CheckpointError(f"{type(model).__name__}: transformers has no class for this architecture")
    return adapter.export_transformers(model, out_dir)


def export_reference(model: nn.Module, out_path: str | os.PathLike) -> Path:
    """Write the state dict in the architecture's original repository naming (a .bin/.pth file)."""
    adapter = _adapter_of(model)
    if not hasattr(adapter, "export_file"):
        raise CheckpointError(f"{type(model).__name__}: no single-file reference format to export to")
    return adapter.export_file(model, out_path)


def convert_checkpoint(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    src_format: str = "auto",
    dst_format: str = "ours",
    config: ModelConfig | None = None,
    strict: bool = True,
    model_class: str | None = None,
    num_answers: int | None = None,
) -> LoadReport:
    model = model_from_checkpoint(read_checkpoint(src, src_format, config), model_class, strict, num_answers)
    if dst_format == "ours":
        save_model(model, dst, metadata={"converted_from": str(src), "source_format": src_format})
    elif dst_format == "transformers":
        export_transformers(model, dst)
    elif dst_format == "reference":
        export_reference(model, dst)
    else:
        raise ValueError(f"unknown output format {dst_format!r}; expected 'ours', 'transformers' or 'reference'")
    return model.load_report
