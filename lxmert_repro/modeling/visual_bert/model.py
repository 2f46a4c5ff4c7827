"""VisualBertModel: text and region embeddings concatenated into one sequence, one BERT encoder, a pooler."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import additive_mask
from ..base import ModelBase, model_output
from ..layers import TransformerLayer
from ..model import Pooler, compute_dtype  # tanh(Linear(position 0)), as BERT
from .config import VisualBertConfig


@model_output
class VisualBertModelOutput:
    language_output: torch.Tensor  # (B, T, H) the text positions of the sequence
    vision_output: torch.Tensor  # (B, N, H) the region positions
    pooled_output: torch.Tensor  # (B, H) tanh(Linear(position 0))
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer (B, heads, T+N, T+N)


class VisualBertEmbeddings(nn.Module):
    """Text: word + position + token type. Regions: Linear(features) + the visual position embedding of
    position 0 + the visual token-type embedding (+ Linear(boxes) in the box ablation). One LayerNorm and
    dropout over the concatenation (per position, so applied to each part alike)."""

    def __init__(self, config: VisualBertConfig) -> None:
        super().__init__()
        h = config.hidden_size
        self.word_embeddings = nn.Embedding(config.vocab_size, h, padding_idx=config.pad_token_id)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.visual_token_type_embeddings = nn.Embedding(config.type_vocab_size, h)
        self.visual_position_embeddings = nn.Embedding(config.max_position_embeddings, h)
        self.visual_projection = nn.Linear(config.visual_feat_dim, h)
        self.box_projection = nn.Linear(config.visual_pos_dim, h) if config.use_boxes else None
        self.layer_norm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.visual_token_type = config.visual_token_type
        self.special_visual_initialize = config.special_visual_initialize

    def after_init(self) -> None:
        """transformers' special_visual_initialize: the visual tables start as copies of the text ones."""
        if not self.special_visual_initialize:
            return
        with torch.no_grad():
            self.visual_token_type_embeddings.weight.copy_(self.token_type_embeddings.weight)
            self.visual_position_embeddings.weight.copy_(self.position_embeddings.weight)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        token_type_ids: torch.Tensor | None,  # (B, T)
        visual_feats: torch.Tensor,  # (B, N, F)
        visual_boxes: torch.Tensor | None,  # (B, N, 4)
        visual_token_type_ids: torch.Tensor | None = None,  # (B, N); None: config.visual_token_type everywhere
    ) -> torch.Tensor:
        """-> (B, T + N, H)."""
        t = input_ids.shape[1]
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(
                f"input_ids has {t} tokens but max_position_embeddings is {self.position_embeddings.num_embeddings}"
            )
        if visual_feats.shape[-1] != self.visual_projection.in_features:
            raise ValueError(
                f"visual_feats has feature size {visual_feats.shape[-1]}, the model expects "
                f"visual_feat_dim={self.visual_projection.in_features}"
            )
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        text = (
            self.word_embeddings(input_ids)
            + self.token_type_embeddings(token_type_ids)
            + self.position_embeddings(torch.arange(t, device=input_ids.device))
        )  # (B, T, H)
        # Every region gets visual position 0 (no image-text alignment) and one token type, unless told per region.
        visual_type = (
            self.visual_token_type_embeddings.weight[self.visual_token_type]
            if visual_token_type_ids is None
            else self.visual_token_type_embeddings(visual_token_type_ids)
        )  # (H,) or (B, N, H)
        visual = (
            self.visual_projection(visual_feats) + self.visual_position_embeddings.weight[0] + visual_type
        )  # (B, N, H)
        if self.box_projection is not None:
            if visual_boxes is None:
                raise ValueError("use_boxes=True needs visual_boxes")
            visual = visual + self.box_projection(visual_boxes.to(visual.dtype))
        return self.dropout(self.layer_norm(torch.cat([text, visual], dim=1)))


class VisualBertModel(ModelBase):
    ROLE = "encoder"

    def __init__(self, config: VisualBertConfig, init: bool = True) -> None:
        super().__init__(config)
        self.embeddings = VisualBertEmbeddings(config)
        self.layers = nn.ModuleList(TransformerLayer(config) for _ in range(config.num_hidden_layers))
        self.pooler = Pooler(config)
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        attention_mask: torch.Tensor | None,  # (B, T) 1 = real token
        visual_feats: torch.Tensor,  # (B, N, F)
        visual_boxes: torch.Tensor | None = None,  # (B, N, 4), used only with use_boxes
        visual_mask: torch.Tensor | None = None,  # (B, N) 1 = real box
        token_type_ids: torch.Tensor | None = None,  # (B, T)
        output_attentions: bool = False,
        visual_token_type_ids: torch.Tensor | None = None,  # (B, N) per-region token type (one-sequence NLVR2)
    ) -> VisualBertModelOutput:
        if visual_feats.dim() != 3 or visual_feats.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"visual_feats must be (B, N, F) with B = {input_ids.shape[0]}, got {tuple(visual_feats.shape)}"
            )
        b, t = input_ids.shape
        n = visual_feats.shape[1]
        dtype = compute_dtype(self.pooler.dense.weight)
        text_keep = attention_mask if attention_mask is not None else input_ids.new_ones(b, t)
        visual_keep = visual_mask if visual_mask is not None else input_ids.new_ones(b, n)
        mask = additive_mask(torch.cat([text_keep.bool(), visual_keep.bool()], dim=1), dtype)  # (B, 1, 1, T+N)

        x = self.embeddings(
            input_ids,
            token_type_ids,
            visual_feats.to(self.pooler.dense.weight.dtype),
            visual_boxes,
            visual_token_type_ids,
        )  # (B, T+N, H)
        probs: list[torch.Tensor] = []
        for layer in self.layers:
            x, p = layer(x, mask, output_attentions)
            if p is not None:
                probs.append(p)
        return VisualBertModelOutput(x[:, :t], x[:, t:], self.pooler(x), tuple(probs) if output_attentions else None)
