"""VilbertForVQA: vilbert-multi-task's VQA head (``vil_prediction``, a SimpleClassifier: Linear(Hb -> 2 Hb),
GELU, LN, Linear(2 Hb -> answers)) on dropout(fused pooled vector); soft-target BCE x answers, as that
repository's VQA loss (the same formula as LXMERT's)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..base import VQAModel, model_output
from ..heads import AnswerHead
from .config import VilbertConfig


@model_output
class VilbertVQAOutput:
    logits: torch.Tensor  # (B, A)
    loss: torch.Tensor | None = None
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    attentions: dict[str, tuple[torch.Tensor, ...]] | None = None

    @property
    def cross_attentions(self) -> tuple[torch.Tensor, ...] | None:
        """Text -> region co-attention per co-attention layer, each (B, heads, T, N) (global token left out)."""
        if self.attentions is None:
            return None
        return tuple(a[..., 1:] for a in self.attentions["text_to_vision"])


class VilbertForVQA(VQAModel):
    """``from_pretraining``: the encoder; the answer head at its init (ViLBERT pretrains no QA head)."""

    output_class = VilbertVQAOutput

    def __init__(self, config: VilbertConfig, num_answers: int) -> None:
        super().__init__(config, num_answers)  # the encoder, as self.vilbert
        self.dropout = nn.Dropout(0.1)  # VILBertForVLTasks dropout_prob
        self.answer_head = AnswerHead(config, num_answers, in_size=config.pooled_size)
        self.init_weights()

    @property
    def num_answers(self) -> int:
        return self.answer_head.num_answers

    def answer_logits(self, enc: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.answer_head(self.dropout(enc.pooled_output))
