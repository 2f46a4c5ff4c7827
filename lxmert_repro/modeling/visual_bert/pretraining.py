"""VisualBertForPreTraining: masked LM on the text positions + image-sentence matching on the pooled output.

Matching convention: which row of the head (transformers' ``cls.seq_relationship``) means "match" is
``config.itm_match_class``: 0 as transformers' docstring says (default), 1 as the uclanlp code trains it (set
when its .th checkpoints are imported). The head's weights are copied as they are in both directions;
``itm_logits`` is returned in our order (column 1 = match, as ``itm_labels``), the same for every
architecture, and the loss is the cross-entropy against our labels.
"""

from __future__ import annotations

from dataclasses import field

import torch
from torch import nn

from ..base import model_output
from ..heads import MaskedLMHead
from ..objectives import PretrainObjectives
from ..pretraining_base import PretrainingModel
from .config import VisualBertConfig
from .model import VisualBertModel


def to_our_matching_order(head_logits: torch.Tensor, match_class: int) -> torch.Tensor:
    """(B, 2) logits of a head whose row ``match_class`` means match -> column 1 = match (our ``itm_labels``)."""
    return head_logits if match_class == 1 else head_logits.flip(-1)


@model_output
class VisualBertPreTrainingOutput:
    loss: torch.Tensor | None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    mlm_logits: torch.Tensor | None = None  # (M, V) at mlm_positions when sparse, else (B, T, V)
    mlm_positions: torch.Tensor | None = None  # (B, T) bool when mlm_logits is sparse
    itm_logits: torch.Tensor | None = None  # (B, 2), column 1 = match
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


class VisualBertForPreTraining(PretrainingModel):
    SUPPORTED_OBJECTIVES = frozenset({"mlm", "itm"})

    def __init__(self, config: VisualBertConfig, objectives: PretrainObjectives | None = None) -> None:
        super().__init__(config, objectives)
        self.visual_bert = VisualBertModel(config, init=False)
        self.mlm_head = MaskedLMHead(config)  # decoder tied to the word embeddings, own bias
        self.itm_head = nn.Linear(config.hidden_size, 2)  # row config.itm_match_class = match
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        visual_feats: torch.Tensor,
        visual_boxes: torch.Tensor | None = None,
        visual_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,  # (B, T) -100 = no loss
        itm_labels: torch.Tensor | None = None,  # (B,) 1 = matched (our convention)
        output_attentions: bool = False,
        **unused_targets: torch.Tensor | None,  # other objectives' targets (obj_labels, ...): not VisualBERT's
    ) -> VisualBertPreTrainingOutput:
        enc = self.visual_bert(
            input_ids, attention_mask, visual_feats, visual_boxes, visual_mask, token_type_ids, output_attentions
        )
        out = VisualBertPreTrainingOutput(
            loss=None,
            language_output=enc.language_output,
            vision_output=enc.vision_output,
            pooled_output=enc.pooled_output,
            attentions=enc.attentions,
        )
        losses: dict[str, torch.Tensor] = {}
        word_emb = self.visual_bert.embeddings.word_embeddings.weight  # (V, H)
        self.mlm_term(out, losses, enc.language_output, word_emb, mlm_labels)
        self.itm_term(
            out,
            losses,
            to_our_matching_order(self.itm_head(enc.pooled_output), self.config.itm_match_class),
            itm_labels,
        )
        return self.finish(out, losses)
