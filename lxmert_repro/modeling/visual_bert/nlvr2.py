"""VisualBERT's own NLVR2 model, the option ``nlvr2_one_sequence=true`` (the default is the task's pair encoding,
``modeling/nlvr2.py::NLVR2Model``).

uclanlp/visualbert's NLVR2 dataset puts the regions of both images in one sequence after the text, the left
image's with visual token type 0 and the right one's with 1; transformers' ``VisualBertForVisualReasoning``
reads the pooled vector through dropout and Linear(H, 2), cross-entropy. Here the batch keeps its (B, K, N, .)
images; each example's K·N regions are laid side by side (padded boxes stay masked, and every region has
visual position 0, so where the padding sits changes nothing).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import HeadModel
from ..nlvr2 import PairOutput
from .config import VisualBertConfig


class VisualBertForVisualReasoning(HeadModel):
    ROLE = "nlvr2"
    images_per_example = 2

    def __init__(self, config: VisualBertConfig) -> None:
        if config.type_vocab_size < self.images_per_example:
            raise ValueError(
                f"VisualBertConfig: one-sequence NLVR2 gives image k token type k, so type_vocab_size must be >= "
                f"{self.images_per_example}, got {config.type_vocab_size}"
            )
        super().__init__(config)  # the encoder, as self.visual_bert
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None,  # (B, T)
        visual_feats: torch.Tensor,  # (B, K, N, F)
        visual_boxes: torch.Tensor | None = None,  # (B, K, N, 4), used only with use_boxes
        visual_mask: torch.Tensor | None = None,  # (B, K, N)
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,  # (B,) long, 1 = the statement is true
        output_attentions: bool = False,
    ) -> PairOutput:
        if visual_feats.dim() != 4 or visual_feats.shape[1] != self.images_per_example:
            raise ValueError(
                f"visual_feats must be (B, {self.images_per_example}, N, F), got {tuple(visual_feats.shape)}"
            )
        b, k, n, f = visual_feats.shape
        feats = visual_feats.reshape(b, k * n, f)  # example b's images side by side: image 0's regions, then 1's
        boxes = None if visual_boxes is None else visual_boxes.reshape(b, k * n, visual_boxes.shape[-1])
        vmask = None if visual_mask is None else visual_mask.reshape(b, k * n)
        types = torch.arange(k, device=feats.device).repeat_interleave(n).expand(b, k * n)  # (B, K·N): image index
        enc = self.visual_bert(
            input_ids,
            attention_mask,
            feats,
            boxes,
            vmask,
            token_type_ids,
            output_attentions,
            visual_token_type_ids=types,
        )
        logits = self.classifier(self.dropout(enc.pooled_output))  # (B, 2)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels, ignore_index=-1)
        return PairOutput(logits, loss, enc.pooled_output, enc.attentions)

    @classmethod
    def from_pretraining(cls, pretrained: nn.Module) -> VisualBertForVisualReasoning:
        """The encoder of ``pretrained`` (a VisualBERT encoder or any model holding one); the head fresh."""
        model = cls(pretrained.config.replace(nlvr2_one_sequence=True))
        model.load_encoder_from(pretrained)
        return model
