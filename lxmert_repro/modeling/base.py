"""What every model shares, whatever its architecture: the config protocol, weight initialisation,
device/dtype helpers, and the output dataclass decorator.

An architecture is one unit: its config dataclass (a ``ModelConfig``, the ``_target_`` of
``lxmert_repro/configs/model/*.yaml``) names its model classes by role (``ROLES``) and the module of its
checkpoint adapters; training code and checkpoint loading go through these names only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import torch
from torch import nn

from . import losses as L

T = TypeVar("T")
C = TypeVar("C", bound="ModelConfig")
V = TypeVar("V", bound="VQAModel")
ROLES = ("encoder", "pretraining", "vqa", "nlvr2")


def model_output(cls: type[T]) -> type[T]:
    """Class decorator: a dataclass of model outputs that is also a pytree node.

    DDP (static graph / unused-parameter mode) finds the forward's output tensors with ``tree_flatten``;
    an unregistered dataclass is an opaque leaf, its tensors are never seen, and gradients silently stop
    being all-reduced. Registered here, at definition, rather than on first use: a registration made
    inside a ``torch.compile``d forward is untraceable.
    """
    cls = dataclass(cls)
    torch.export.register_dataclass(cls)
    return cls


def import_path(obj: type) -> str:
    """``package.module.Name`` of a class, as checkpoints record it."""
    return f"{obj.__module__}.{obj.__qualname__}"


def resolve_class(path: str, base: type, source: str) -> type:
    """The class at ``path`` (one of this package's), checked to derive from ``base``."""
    from hydra.utils import get_class

    if not path.startswith("lxmert_repro."):
        raise ValueError(f"{source}: class {path!r} is not one of lxmert_repro's")
    try:
        cls = get_class(path)
    except Exception as e:  # hydra wraps ImportError / AttributeError
        raise ValueError(f"{source}: class {path!r} not found ({e})") from None
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ValueError(f"{source}: {path!r} is not a {base.__name__}")
    return cls


class ModelConfig:
    """Mixin of every architecture's config dataclass.

    Subclasses set ``MODEL_CLASSES`` (role -> import path of the model class), ``ENCODER_PREFIX`` (the
    attribute under which the head models keep the encoder, the first part of their state-dict keys) and
    ``ADAPTERS`` (import path of the module that reads/writes the architecture's reference formats).
    ``OBJECT_LABELS_WITH_BACKGROUND``: its ``num_object_labels`` counts the detector's background too (ViLBERT's
    region head: classes + background, 1601 for Visual Genome), so a run built from a store of C classes gets C + 1.
    ``RUN_FIELDS``: the fields a run may set on a LOADED model's config (``finetune.init_from`` with
    ``model.<field>=...``, as transformers' ``from_pretrained(**kwargs)``): they change no parameter's shape or
    meaning (dropout, how much is computed, how fresh heads are initialised). Every other field describes the
    weights; a run asking for another value than the checkpoint's is refused.
    """

    MODEL_CLASSES: ClassVar[dict[str, str]] = {}
    ENCODER_PREFIX: ClassVar[str] = ""
    ADAPTERS: ClassVar[str] = ""
    OBJECT_LABELS_WITH_BACKGROUND: ClassVar[bool] = False
    RUN_FIELDS: ClassVar[frozenset[str]] = frozenset(
        {"hidden_dropout_prob", "attention_probs_dropout_prob", "sparse_predictions", "initializer_range", "extra"}
    )
    initializer_range: float
    hidden_size: int
    layer_norm_eps: float

    @property
    def pooled_size(self) -> int:
        """Width of the encoder's ``pooled_output``, what the task heads read: ``hidden_size`` unless the
        architecture pools to another width (ViLBERT: ``bi_hidden_size``)."""
        return self.hidden_size

    def model_class(self, role: str) -> type[ModelBase]:
        if role not in self.MODEL_CLASSES:
            raise ValueError(f"{type(self).__name__} has no {role!r} model; it has {sorted(self.MODEL_CLASSES)}")
        return resolve_class(self.MODEL_CLASSES[role], ModelBase, type(self).__name__)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], source: str = "config") -> C:
        """Build from a dict; unknown keys are an error naming them (a typo must not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{source}: unknown {cls.__name__} field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**values)

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: model config file not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if "config" in values and isinstance(values["config"], dict):
            values = values["config"]
        from .objectives import split_objectives

        values, _ = split_objectives(values)  # older files carried the objective fields here
        return cls.from_dict(values, source=str(path))

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]


def init_bert_weights(module: nn.Module, std: float) -> None:
    """Weights N(0, std), biases 0, LayerNorm (1, 0); the padding_idx row of embeddings zero (BERT)."""
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, mean=0.0, std=std)
        if module.padding_idx is not None:
            with torch.no_grad():
                module.weight[module.padding_idx].zero_()
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class ModelBase(nn.Module):
    """Base of every model class. ``ROLE`` is its role in its architecture (one of ``ROLES``)."""

    ROLE: ClassVar[str] = ""
    config: Any

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise TypeError(f"{type(self).__name__} expects a model config, got {type(config).__name__}")
        self.config = config

    def init_weights(self) -> None:
        std = self.config.initializer_range
        self.apply(lambda m: init_bert_weights(m, std))
        for m in self.modules():  # modules whose init depends on other tables (e.g. copies of them)
            if hasattr(m, "after_init"):
                m.after_init()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


class HeadModel(ModelBase):
    """A task model of any architecture: its encoder (``config.model_class("encoder")``) kept under
    ``config.ENCODER_PREFIX``, so every head model of an architecture names the encoder's tensors alike
    (``<prefix>.*``), plus the head the subclass adds before calling ``init_weights``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        if not config.ENCODER_PREFIX:
            raise ValueError(f"{type(config).__name__}: ENCODER_PREFIX is empty (the encoder's attribute name)")
        self.add_module(config.ENCODER_PREFIX, config.model_class("encoder")(config, init=False))

    @property
    def encoder(self) -> nn.Module:
        """The architecture's encoder (the submodule named ``config.ENCODER_PREFIX``)."""
        return getattr(self, self.config.ENCODER_PREFIX)

    def load_encoder_from(self, pretrained: nn.Module) -> None:
        """Copy the encoder of ``pretrained``: an encoder, or any model keeping one under the prefix."""
        src = (
            pretrained
            if getattr(pretrained, "ROLE", None) == "encoder"
            else getattr(pretrained, self.config.ENCODER_PREFIX)
        )
        self.encoder.load_state_dict(src.state_dict())


class VQAModel(HeadModel):
    """Base of the ``vqa`` role: built from ``(config, num_answers)``; ``from_pretraining`` keeps the encoder and
    leaves the answer head at its init (architectures with a pretraining QA head extend it)."""

    ROLE = "vqa"
    # the architecture's @model_output: (logits, loss, language_output, vision_output, pooled_output, attentions)
    output_class: ClassVar[type]

    def __init__(self, config: ModelConfig, num_answers: int) -> None:
        if num_answers < 1:
            raise ValueError(f"{type(self).__name__}: num_answers must be >= 1, got {num_answers}")
        super().__init__(config)

    def answer_logits(self, enc: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, A) from the encoder's output: what the architecture's head reads (a pooled vector, a token)."""
        raise NotImplementedError

    def answer_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """LXMERT's soft-target BCE x answers, unless the architecture's reference trains another."""
        return L.vqa_loss(logits, targets)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        visual_feats: torch.Tensor,
        visual_boxes: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        vqa_targets: torch.Tensor | None = None,  # (B, A) soft scores
        output_attentions: bool = False,
    ) -> Any:
        enc = self.encoder(
            input_ids, attention_mask, visual_feats, visual_boxes, visual_mask, token_type_ids, output_attentions
        )
        logits = self.answer_logits(enc, attention_mask)  # (B, A)
        loss = None
        if vqa_targets is not None:
            L.check_vqa_targets(logits, vqa_targets)
            loss = self.answer_loss(logits, vqa_targets)
        return self.output_class(
            logits, loss, enc.language_output, enc.vision_output, enc.pooled_output, enc.attentions
        )

    @classmethod
    def from_pretraining(
        cls: type[V],
        pretrained: nn.Module,
        num_answers: int,
        pretrain_answers: Sequence[str] | None = None,
        task_answers: Sequence[str] | None = None,
    ) -> V:
        model = cls(pretrained.config, num_answers)
        model.load_encoder_from(pretrained)
        return model
