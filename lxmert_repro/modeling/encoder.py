"""The two-stream encoder stack: language layers, object-relationship layers, cross-modality layers."""

from __future__ import annotations

import torch
from torch import nn

from .base import model_output
from .config import LxmertConfig
from .layers import CrossModalityLayer, TransformerLayer


@model_output
class EncoderAttentions:
    """Attention probabilities per layer, each (B, heads, Tq, Tk)."""

    language: tuple[torch.Tensor, ...]
    vision: tuple[torch.Tensor, ...]
    cross_lang_to_visn: tuple[torch.Tensor, ...]
    cross_visn_to_lang: tuple[torch.Tensor, ...]


class LxmertEncoder(nn.Module):
    """9 language layers, 5 object-relationship layers, then 5 cross-modality layers (docs/faithful.md §3)."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.language_layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.l_layers))
        self.object_layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.r_layers))
        self.cross_layers = nn.ModuleList(CrossModalityLayer(config) for _ in range(config.x_layers))

    def forward(
        self,
        lang: torch.Tensor,  # (B, T, H) embedded text
        lang_mask: torch.Tensor | None,  # (B, 1, 1, T) additive
        visn: torch.Tensor,  # (B, N, H) encoded boxes
        visn_mask: torch.Tensor | None,  # (B, 1, 1, N) additive
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, EncoderAttentions | None]:
        l_att, v_att, x_lv, x_vl = [], [], [], []
        for layer in self.language_layers:
            lang, p = layer(lang, lang_mask, output_attentions)
            l_att.append(p)
        for layer in self.object_layers:
            visn, p = layer(visn, visn_mask, output_attentions)
            v_att.append(p)
        for layer in self.cross_layers:
            lang, visn, p = layer(lang, lang_mask, visn, visn_mask, output_attentions)
            if p is not None:
                x_lv.append(p[0])
                x_vl.append(p[1])
        attentions = (
            EncoderAttentions(tuple(l_att), tuple(v_att), tuple(x_lv), tuple(x_vl)) if output_attentions else None
        )
        return lang, visn, attentions
