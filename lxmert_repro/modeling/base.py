"""What every LXMERT model class shares: the config, weight initialisation, device/dtype helpers."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import nn

from .config import LxmertConfig

T = TypeVar("T")


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


def init_lxmert_weights(module: nn.Module, std: float) -> None:
    """Weights N(0, std), biases 0, LayerNorm (1, 0); the padding_idx row of embeddings zero (BERT/LXMERT)."""
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


class LxmertBase(nn.Module):
    """Base of LxmertModel / LxmertForPreTraining / LxmertForVQA."""

    config: LxmertConfig

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        if not isinstance(config, LxmertConfig):
            raise TypeError(f"{type(self).__name__} expects an LxmertConfig, got {type(config).__name__}")
        self.config = config

    def init_weights(self) -> None:
        std = self.config.initializer_range
        self.apply(lambda m: init_lxmert_weights(m, std))

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
