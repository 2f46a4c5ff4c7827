"""VisualBertForVQA: transformers' VisualBertForQuestionAnswering head over the task's answers.

The head reads the hidden state at index (number of real text tokens - 2), the last word before [SEP]
(as the uclanlp code), then dropout and Linear(H, answers). Loss (``config.vqa_loss``): "kl" =
KL-divergence of the soft targets to softmax(logits), summed over answers and averaged over the batch
(transformers); "bce" = LXMERT's soft-target BCE x answers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import losses as L
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

    def __init__(self, config: VisualBertConfig, num_answers: int) -> None:
        super().__init__(config, num_answers)  # the encoder, as self.visual_bert
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_answers)
        self.init_weights()

    @property
    def num_answers(self) -> int:
        return self.classifier.out_features

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
    ) -> VisualBertVQAOutput:
        enc = self.encoder(
            input_ids, attention_mask, visual_feats, visual_boxes, visual_mask, token_type_ids, output_attentions
        )
        b, t = input_ids.shape
        lengths = attention_mask.sum(1) if attention_mask is not None else input_ids.new_full((b,), t)
        index = (lengths.long() - 2).clamp(min=0)  # (B,) the last word before [SEP]
        gathered = enc.language_output[torch.arange(b, device=index.device), index]  # (B, H)
        logits = self.classifier(self.dropout(gathered))  # (B, A)
        loss = None
        if vqa_targets is not None:
            L.check_vqa_targets(logits, vqa_targets)
            loss = (
                kl_answer_loss(logits, vqa_targets) if self.config.vqa_loss == "kl" else L.vqa_loss(logits, vqa_targets)
            )
        return VisualBertVQAOutput(
            logits, loss, enc.language_output, enc.vision_output, enc.pooled_output, enc.attentions
        )
