"""Encoder layers: the single-stream BERT layer (language / object-relationship) and the cross-modality layer."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .attention import AttentionOutput, MultiHeadAttention, SelfAttentionBlock
from .config import LxmertConfig


class FeedForward(nn.Module):
    """LN(dropout(W2 act(W1 x)) + x), post-LN as BERT."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.intermediate = nn.Linear(config.hidden_size, config.intermediate_size)
        self.output = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.act = F.gelu if config.hidden_act == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.dropout(self.output(self.act(self.intermediate(x)))) + x)


class TransformerLayer(nn.Module):
    """One BERT layer: self-attention then feed-forward (used for language and object-relationship layers)."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.attention = SelfAttentionBlock(config)
        self.ffn = FeedForward(config)

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x, probs = self.attention(x, mask, output_attentions)
        return self.ffn(x), probs


class CrossModalityLayer(nn.Module):
    """LXMERT's cross-modality layer (docs/faithful.md §3), in this order:

    1. ONE cross-attention module shared by both directions, both computed from the layer's inputs:
       lang' = X(lang -> visn), visn' = X(visn -> lang), each with residual + LN (the same LN);
    2. self-attention per stream (separate weights);
    3. feed-forward per stream (separate weights).
    """

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.cross_attention = MultiHeadAttention(config)
        self.cross_output = AttentionOutput(config)
        self.lang_self_attention = SelfAttentionBlock(config)
        self.visn_self_attention = SelfAttentionBlock(config)
        self.lang_ffn = FeedForward(config)
        self.visn_ffn = FeedForward(config)

    def forward(
        self,
        lang: torch.Tensor,  # (B, T, H)
        lang_mask: torch.Tensor | None,  # (B, 1, 1, T) additive
        visn: torch.Tensor,  # (B, N, H)
        visn_mask: torch.Tensor | None,  # (B, 1, 1, N) additive
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        # Shared projections: each stream projected once by the same Q/K/V; each stream's queries attend to
        # the other stream's keys/values.
        lq, lk, lv = self.cross_attention.project(lang)
        vq, vk, vv = self.cross_attention.project(visn)
        l_ctx, l2v = self.cross_attention.attend(lq, vk, vv, visn_mask, output_attentions)  # (B, T, H)
        v_ctx, v2l = self.cross_attention.attend(vq, lk, lv, lang_mask, output_attentions)  # (B, N, H)
        lang = self.cross_output(l_ctx, lang)
        visn = self.cross_output(v_ctx, visn)

        lang, _ = self.lang_self_attention(lang, lang_mask)
        visn, _ = self.visn_self_attention(visn, visn_mask)

        lang = self.lang_ffn(lang)
        visn = self.visn_ffn(visn)
        return lang, visn, ((l2v, v2l) if output_attentions else None)
