"""VisualBertForVQA: transformers' VisualBertForQuestionAnswering head over the task's answers.

The head reads the hidden state at index (number of real text tokens - 2), the last word before [SEP]
(as the uclanlp code), then dropout and Linear(H, answers). Loss (``config.vqa_loss``): "kl" =
KL-divergence of the soft targets to softmax(logits), summed over answers and averaged over the batch
(transformers); "bce" = LXMERT's soft-target BCE x answers.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..base import VQAModel, model_output
from .config import VisualBertConfig


@model_output
class VisualBertVQAOutput:
    logits: torch.Tensor  # (B, A)
    loss: torch.Tensor | None = None
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None

    @property
    def cross_attentions(self) -> tuple[torch.Tensor, ...] | None:
        """Text -> region attention per layer, each (B, heads, T, N): the text rows, region columns."""
        if self.attentions is None or self.language_output is None:
            return None
        t = self.language_output.shape[1]
        return tuple(a[:, :, :t, t:] for a in self.attentions)


def kl_answer_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_a t_a (log t_a - log softmax(logits)_a), mean over the batch (torch KLDivLoss, batchmean)."""
    return F.kl_div(F.log_softmax(logits.float(), dim=-1), targets.float(), reduction="batchmean")


class VisualBertForVQA(VQAModel):
    """``from_pretraining``: the encoder; the classifier at its init (VisualBERT pretrains no QA head)."""

    output_class = VisualBertVQAOutput

    def __init__(self, config: VisualBertConfig, num_answers: int) -> None:
        super().__init__(config, num_answers)  # the encoder, as self.visual_bert
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_answers)
        self.init_weights()

    @property
    def num_answers(self) -> int:
        return self.classifier.out_features

    def answer_logits(self, enc: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        states = enc.language_output  # (B, T, H)
        b, t = states.shape[:2]
        lengths = attention_mask.sum(1) if attention_mask is not None else torch.full((b,), t, device=states.device)
        index = (lengths.long() - 2).clamp(min=0)  # (B,) the last word before [SEP]
        return self.classifier(self.dropout(states[torch.arange(b, device=index.device), index]))

    def answer_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return kl_answer_loss(logits, targets) if self.config.vqa_loss == "kl" else super().answer_loss(logits, targets)
