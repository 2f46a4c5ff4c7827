"""Input encoders: text embeddings and the visual (feature + box) encoder."""

from __future__ import annotations

import torch
from torch import nn

from .config import LxmertConfig


class TextEmbeddings(nn.Module):
    """word + position + token-type embeddings, then LayerNorm, then dropout (BERT)."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        pad = config.embedding_padding_idx  # original LXMERT: padding_idx=0 on all three tables
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=pad)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.hidden_size, padding_idx=pad)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size, padding_idx=pad)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids (B, T) -> (B, T, H)."""
        t = input_ids.shape[1]
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"input_ids has {t} tokens but max_position_embeddings is {self.position_embeddings.num_embeddings}"
            )
        # Lookups go through the modules (not weight slices) so padding_idx rows get no gradient.
        positions = torch.arange(t, device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = (
            self.word_embeddings(input_ids)  # (B, T, H)
            + self.position_embeddings(positions)  # (T, H), broadcast over B
            + self.token_type_embeddings(token_type_ids)
        )
        return self.dropout(self.layer_norm(x))


class VisualFeatureEncoder(nn.Module):
    """(LN_f(Linear(feat)) + LN_b(Linear(box))) / 2, then dropout: two LayerNorms, averaged (docs/faithful.md §3)."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.feat_fc = nn.Linear(config.visual_feat_dim, config.hidden_size)
        self.feat_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.box_fc = nn.Linear(config.visual_pos_dim, config.hidden_size)
        self.box_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, feats: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """feats (B, N, F), boxes (B, N, 4) in [0, 1] -> (B, N, H)."""
        if feats.shape[-1] != self.feat_fc.in_features:
            raise ValueError(
                f"visual_feats has feature size {feats.shape[-1]}, the model expects "
                f"visual_feat_dim={self.feat_fc.in_features}"
            )
        x = self.feat_norm(self.feat_fc(feats))
        y = self.box_norm(self.box_fc(boxes))
        return self.dropout((x + y) / 2)
