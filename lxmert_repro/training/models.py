"""Building the models a run trains, and the model directories it writes.

A run's model dir (``model_best/``, ``model_last/``) is the model helper's format (config json +
model.safetensors, via ``save_model``) plus ``answers.json`` (the head's answer order) and
``tokenizer/`` — everything ``lxmert-finetune``, ``lxmert-evaluate`` and ``lxmert-predict`` need.
"Load pretrained weights only" (``finetune.init_from`` / ``pretrain.init_from``) lives here; full-state
resume is ``trainer.resume`` (checkpointing.py).

With ``finetune.init_from`` the checkpoint decides the model; the ``model`` group's values are not used, except
those the user set (as transformers' ``from_pretrained(**kwargs)``): a field in the config's ``RUN_FIELDS``
(dropout probabilities, ...) is set on the loaded config; any other field that differs from the checkpoint's is
refused, naming it, the checkpoint's value and the requested one. "Set by the user" is what Hydra composed on
top of the model group: ``model.<field>=`` on the command line (even when equal to the group's value) and any
field whose composed value differs from the group's own yaml (an experiment's ``model:`` block). A config
composed outside a Hydra app (the compose API) does not say what was overridden: the checkpoint's config is then
used as saved.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lxmert_repro.io_utils import atomic_dir
from lxmert_repro.modeling.objectives import PretrainObjectives

log = logging.getLogger(__name__)

ANSWERS_FILE = "answers.json"
TOKENIZER_DIR = "tokenizer"


def _data_overrides(data: Any) -> dict[str, Any]:
    """Model sizes that the prepared data decides: vocabulary, feature width, label counts."""
    out: dict[str, Any] = {"vocab_size": len(data.tokenizer), "visual_feat_dim": int(data.store.feat_dim)}
    meta = getattr(data.store, "metadata", None) or {}
    if meta.get("object_classes"):
        out["num_object_labels"] = len(meta["object_classes"])
    if meta.get("attribute_classes"):
        out["num_attr_labels"] = len(meta["attribute_classes"])
    return out


def model_config(cfg: DictConfig, **overrides: Any) -> Any:
    """``cfg.model`` instantiated (the architecture's config) with the data-decided fields it has replaced
    (``num_object_labels``: the detector's classes, plus its background where the architecture counts it)."""
    mcfg = instantiate(cfg.model, _convert_="all")
    names = {f.name for f in dataclasses.fields(mcfg)}
    overrides = {k: v for k, v in overrides.items() if k in names}
    if "num_object_labels" in overrides and mcfg.OBJECT_LABELS_WITH_BACKGROUND:
        overrides["num_object_labels"] += 1
    return mcfg.replace(**overrides) if overrides else mcfg


def objectives_config(cfg: DictConfig, **overrides: Any) -> PretrainObjectives:
    """``cfg.objectives`` (default: every objective on, each model keeps those it has)."""
    node = cfg.get("objectives")
    objectives = instantiate(node, _convert_="all") if node is not None else PretrainObjectives()
    return objectives.replace(**overrides) if overrides else objectives


def build_pretrain_model(cfg: DictConfig, data: Any) -> torch.nn.Module:
    from lxmert_repro.modeling import build_model

    overrides = _data_overrides(data)
    objective_changes: dict[str, Any] = {}
    if data.answers is not None:
        overrides["num_qa_labels"] = len(data.answers)
    else:
        objective_changes["task_qa"] = False
    model = build_model(model_config(cfg, **overrides), "pretraining", objectives_config(cfg, **objective_changes))
    init_from = (cfg.get("pretrain") or {}).get("init_from")
    if init_from:
        load_weights_into(model, init_from)
    return model


def load_weights_into(model: torch.nn.Module, path: str | os.PathLike) -> None:
    """Copy the weights of a saved model dir into ``model`` (same architecture required)."""
    from lxmert_repro.modeling import load_model

    src = load_model(str(path))
    try:
        model.load_state_dict(src.state_dict(), strict=True)
    except RuntimeError as e:
        raise RuntimeError(
            f"{path}: weights do not fit this model (another model config?): {str(e).splitlines()[0]}"
        ) from e


def _model_group_values(choice: str | None) -> dict[str, Any]:
    """The ``model`` group's yaml ``choice`` composed alone (its defaults list applied, nothing else)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if not choice:
        return {}
    overrides = [f"+model={choice}"]
    if GlobalHydra.instance().is_initialized():  # inside the app: its search path, the user's config dirs too
        node = compose(config_name=None, overrides=overrides).model
    else:
        from lxmert_repro.cli import CONFIG_DIR

        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            node = compose(config_name=None, overrides=overrides).model
    return OmegaConf.to_container(node, resolve=True)  # type: ignore[return-value]


def user_model_changes(cfg: DictConfig, hydra: Any = None) -> dict[str, Any] | None:
    """The ``model`` fields this run set on top of its model group, with their values: the fields named by a
    command-line override (``model.<field>=``, ``+``/``++`` too) and those whose composed value differs from the
    group's yaml (an experiment's ``model:`` block). ``hydra``: the run's Hydra config (default: the running app's);
    None when there is none (a config from the compose API): what was overridden is then unknown."""
    from hydra.core.hydra_config import HydraConfig

    if hydra is None:
        if not HydraConfig.initialized():
            return None
        hydra = HydraConfig.get()
    node = cfg.get("model")
    values: dict[str, Any] = OmegaConf.to_container(node, resolve=True) if node is not None else {}  # type: ignore[assignment]
    group = _model_group_values((hydra.runtime.choices or {}).get("model"))
    named = set()
    for override in hydra.overrides.task:
        key = str(override).split("=", 1)[0].lstrip("+~")
        if key.startswith("model."):
            named.add(key[len("model.") :].split(".", 1)[0])
    changed = named | {k for k, v in values.items() if group.get(k, object()) != v}
    return {k: values[k] for k in sorted(changed) if k in values and k != "_target_"}


def apply_model_changes(config: Any, changes: dict[str, Any], source: str) -> Any:
    """``config`` (a loaded model's) with the run's ``changes`` of its ``RUN_FIELDS``; a change of any other field
    that differs from the checkpoint's value, or of a field it does not have, is an error naming them."""
    names = {f.name for f in dataclasses.fields(config)}
    kind = type(config).__name__
    unknown = sorted(set(changes) - names)
    if unknown:
        raise ValueError(
            f"{source}: the checkpoint's {kind} has no field "
            + ", ".join(f"model.{k} (requested {changes[k]!r})" for k in unknown)
        )
    refused = [k for k, v in changes.items() if k not in config.RUN_FIELDS and getattr(config, k) != v]
    if refused:
        raise ValueError(
            f"{source}: "
            + "; ".join(
                f"model.{k}={changes[k]!r} differs from the checkpoint's {k}={getattr(config, k)!r}" for k in refused
            )
            + f" (a field that describes the loaded weights cannot change: drop the override; a loaded {kind} "
            + f"takes only {sorted(config.RUN_FIELDS)} from the run)"
        )
    applied = {k: v for k, v in changes.items() if getattr(config, k) != v}
    if not applied:
        return config
    log.info(
        "%s: from the run's model config: %s",
        source,
        ", ".join(f"{k}={v!r} (checkpoint: {getattr(config, k)!r})" for k, v in applied.items()),
    )
    try:
        return config.replace(**applied)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None


def load_with_run_changes(path: str | os.PathLike, changes: dict[str, Any] | None, source: str) -> torch.nn.Module:
    """The model at ``path`` with ``changes`` (``user_model_changes``) applied to its config before it is built."""
    from lxmert_repro.modeling.checkpoint import model_from_checkpoint, read_checkpoint

    ckpt = read_checkpoint(str(path))
    if changes:
        config = apply_model_changes(ckpt.config, changes, source)
        if config is not ckpt.config:
            own, built = ckpt.model_class, config.model_class(ckpt.model_class.ROLE)
            if built is not own:  # e.g. VisualBERT's nlvr2_one_sequence on a loaded NLVR2 model
                raise ValueError(
                    f"{source}: the checkpoint is a {own.__name__}; with "
                    + ", ".join(f"model.{k}={v!r}" for k, v in changes.items() if getattr(ckpt.config, k) != v)
                    + f" it would be a {built.__name__}"
                )
            ckpt = dataclasses.replace(ckpt, config=config)
    return model_from_checkpoint(ckpt)


def load_init_model(cfg: DictConfig, data: Any) -> tuple[torch.nn.Module, Path] | None:
    """The model at ``finetune.init_from`` (any architecture) with the run's model changes (module docstring),
    checked against the data (feature size, vocabulary, tokenizer); None (with a warning) when it is not set: the
    task's model starts from random weights."""
    init_from = (cfg.get("finetune") or {}).get("init_from")
    if not init_from:
        log.warning("finetune.init_from is not set: fine-tuning from randomly initialised weights")
        return None
    path = Path(str(init_from))
    if not path.exists():
        raise FileNotFoundError(f"finetune.init_from={path}: no such model directory")
    changes = user_model_changes(cfg)
    if changes is None:
        log.debug("finetune.init_from: not a Hydra app run, no model overrides known: the checkpoint's config is used")
    src = load_with_run_changes(path, changes, f"finetune.init_from={path}")
    feat_dim, vocab = int(data.store.feat_dim), len(data.tokenizer)
    if src.config.visual_feat_dim != feat_dim:
        raise ValueError(
            f"finetune.init_from={path}: model expects {src.config.visual_feat_dim}-d features, "
            f"the feature store data.features has {feat_dim}-d"
        )
    if src.config.vocab_size < vocab:
        raise ValueError(
            f"finetune.init_from={path}: model vocabulary {src.config.vocab_size} < tokenizer size {vocab}"
        )
    _check_same_tokenizer(path, data.tokenizer_dir)
    return src, path


def build_vqa_model(cfg: DictConfig, data: Any, match: Callable[[str], str] | None = None) -> torch.nn.Module:
    """From ``finetune.init_from`` (a pretraining or VQA model dir, any architecture) or from scratch (no
    init_from). ``match``: how a task answer is spelled in the pretraining answer table (GQA: LXMERT's
    conversion, as airsplay/lxmert src/pretrain/qa_answer_table.py does); None = the same string (VQA)."""
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.modeling import build_model

    task_answers = list(data.answers.answers)
    init = load_init_model(cfg, data)
    if init is None:
        return build_model(model_config(cfg, **_data_overrides(data)), "vqa", num_answers=len(task_answers))
    src, path = init
    if src.ROLE == "vqa":
        if src.num_answers != len(task_answers):
            raise ValueError(
                f"finetune.init_from={path}: a VQA model with {src.num_answers} answers, the task has "
                f"{len(task_answers)}"
            )
        return src
    if src.ROLE != "pretraining":
        raise TypeError(f"finetune.init_from={path}: expected a pretraining or VQA model, got {type(src).__name__}")
    vqa_class = src.config.model_class("vqa")
    answers_file = path / ANSWERS_FILE
    explicit = (cfg.get("finetune") or {}).get("pretrain_answers")
    if explicit:  # e.g. LXMERT's all_ans.json for an imported original checkpoint
        answers_file = Path(str(explicit))
        if not answers_file.is_file():
            raise FileNotFoundError(f"finetune.pretrain_answers={answers_file}: no such file")
    if getattr(src, "answer_head", None) is not None and answers_file.is_file():
        pre_answers = AnswerVocab.load(answers_file).answers
        lookup = task_answers if match is None else [match(a) for a in task_answers]
        model = vqa_class.from_pretraining(src, len(task_answers), pre_answers, lookup)
        pre_set = set(pre_answers)
        matched = sum(1 for a in lookup if a in pre_set)
        log.info(
            "answer head initialised from the pretraining QA head: %d/%d answers matched", matched, len(task_answers)
        )
    else:
        model = vqa_class.from_pretraining(src, len(task_answers))
        log.info("pretrained model has no QA head / answers.json: answer head initialised randomly")
    return model


def _check_same_tokenizer(model_dir: Path, data_tokenizer_dir: Path) -> None:
    """The fine-tuning data must be tokenized with the vocabulary the model was pretrained with."""
    from lxmert_repro.text.tokenizer import load_tokenizer

    own = model_dir / TOKENIZER_DIR
    if not own.is_dir():
        return  # converted checkpoints carry no tokenizer: the user vouches for the vocabulary
    a = load_tokenizer(str(own)).get_vocab()
    b = load_tokenizer(str(data_tokenizer_dir)).get_vocab()
    if a != b:
        raise ValueError(
            f"finetune.init_from={model_dir}: its tokenizer ({own}) differs from the one the fine-tuning data "
            f"was prepared with ({data_tokenizer_dir}); prepare the data with the model's tokenizer "
            f"(lxmert-prepare tokenizer=bert_base_uncased tokenizer.path={own})"
        )


def load_vqa_model(path: str | os.PathLike) -> torch.nn.Module:
    from lxmert_repro.modeling import load_model

    model = load_model(str(path))
    if getattr(model, "ROLE", None) != "vqa":
        raise TypeError(f"{path}: expected a fine-tuned VQA model, got {type(model).__name__}")
    return model


def save_run_model(
    model: torch.nn.Module,
    out_dir: str | os.PathLike,
    answers: Any = None,
    tokenizer_dir: str | os.PathLike | None = None,
) -> Path:
    """Write the model dir atomically (temp dir beside it, then rename over the old one)."""
    from lxmert_repro.modeling import save_model

    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        save_model(model, tmp)
        if answers is not None:
            answers.save(tmp / ANSWERS_FILE)
        if tokenizer_dir is not None:
            shutil.copytree(tokenizer_dir, tmp / TOKENIZER_DIR)
    return out
