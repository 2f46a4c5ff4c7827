"""LxmertModel: embeddings + two-stream encoder + pooler; returns both streams and the pooled vector."""

from __future__ import annotations

import torch
from torch import nn

from .attention import additive_mask
from .base import ModelBase, model_output
from .config import LxmertConfig
from .embeddings import TextEmbeddings, VisualFeatureEncoder
from .encoder import EncoderAttentions, LxmertEncoder


@model_output
class LxmertModelOutput:
    language_output: torch.Tensor  # (B, T, H)
    vision_output: torch.Tensor  # (B, N, H)
    pooled_output: torch.Tensor  # (B, H)
    attentions: EncoderAttentions | None = None  # with output_attentions=True

    @property
    def cross_attentions(self) -> tuple[torch.Tensor, ...] | None:
        """Language -> vision cross-attention probabilities per cross layer, each (B, heads, T, N)."""
        return None if self.attentions is None else self.attentions.cross_lang_to_visn


class Pooler(nn.Module):
    """tanh(Linear(language output at position 0)), after the cross layers."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, lang: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(lang[:, 0]))


def compute_dtype(reference: torch.Tensor) -> torch.dtype:
    """The dtype attention scores will have: the autocast dtype when autocast is on, else the tensor's."""
    dev = reference.device.type
    if torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return reference.dtype


class LxmertModel(ModelBase):
    """The LXMERT encoder without task heads."""

    ROLE = "encoder"

    def __init__(self, config: LxmertConfig, init: bool = True) -> None:
        super().__init__(config)
        self.embeddings = TextEmbeddings(config)
        self.visual_encoder = VisualFeatureEncoder(config)
        self.encoder = LxmertEncoder(config)
        self.pooler = Pooler(config)
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        attention_mask: torch.Tensor | None,  # (B, T) 1 = real token
        visual_feats: torch.Tensor,  # (B, N, F)
        visual_boxes: torch.Tensor,  # (B, N, 4) normalised x1y1x2y2
        visual_mask: torch.Tensor | None = None,  # (B, N) 1 = real box
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        output_attentions: bool = False,
    ) -> LxmertModelOutput:
        if visual_feats.dim() != 3 or visual_boxes.shape != (*visual_feats.shape[:2], self.config.visual_pos_dim):
            raise ValueError(
                f"visual_feats must be (B, N, F) and visual_boxes (B, N, {self.config.visual_pos_dim}); "
                f"got {tuple(visual_feats.shape)} and {tuple(visual_boxes.shape)}"
            )
        if visual_feats.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"batch size differs: input_ids {tuple(input_ids.shape)}, visual_feats {tuple(visual_feats.shape)}"
            )
        dtype = compute_dtype(self.pooler.dense.weight)
        lang_mask = additive_mask(attention_mask, dtype)  # (B, 1, 1, T) or None
        visn_mask = additive_mask(visual_mask, dtype)  # (B, 1, 1, N) or None

        lang = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        visn = self.visual_encoder(visual_feats.to(lang.dtype), visual_boxes.to(lang.dtype))  # (B, N, H)
        lang, visn, attentions = self.encoder(lang, lang_mask, visn, visn_mask, output_attentions)
        return LxmertModelOutput(lang, visn, self.pooler(lang), attentions)
