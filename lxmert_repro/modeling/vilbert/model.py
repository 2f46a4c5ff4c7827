"""VilbertModel: a text stream and a vision stream joined by co-attention layers, two ReLU poolers.

As vilbert-multi-task vilbert/vilbert.py (BertModel, BertEncoder, BertConnectionLayer, BertImageEmbeddings):
regions are embedded as LN(Linear(feature) + Linear(5-d location)); a global image token (the mean of the
real regions' features, location (0, 0, 1, 1, 1)) is prepended, as the repository's data loaders do; the
layers run in ``config.schedule()`` order; the pooled vector is text_pool * vision_pool ("mul" fusion).
"""

from __future__ import annotations

import torch
from torch import nn

from ..attention import AttentionOutput, MultiHeadAttention, additive_mask
from ..base import ModelBase, model_output
from ..embeddings import TextEmbeddings
from ..layers import FeedForward, TransformerLayer
from ..model import compute_dtype
from .config import VilbertConfig

GLOBAL_LOCATION = (0.0, 0.0, 1.0, 1.0, 1.0)  # the whole image: x1, y1, x2, y2, area fraction


@model_output
class VilbertModelOutput:
    language_output: torch.Tensor  # (B, T, H)
    vision_output: torch.Tensor  # (B, N, Hv) the regions (the global token is global_output)
    pooled_output: torch.Tensor  # (B, Hb) text_pooled * vision_pooled (or +), before any head's dropout
    text_pooled: torch.Tensor  # (B, Hb) ReLU(Linear(text at [CLS]))
    vision_pooled: torch.Tensor  # (B, Hb) ReLU(Linear(vision at the global token))
    global_output: torch.Tensor | None = None  # (B, Hv) the global image token's state
    attentions: dict[str, tuple[torch.Tensor, ...]] | None = (
        None  # "text", "vision", "text_to_vision", "vision_to_text"
    )


def region_locations(boxes: torch.Tensor) -> torch.Tensor:
    """(B, N, 4) x1y1x2y2 / image w,h -> (B, N, 5) with the box's fraction of the image area appended."""
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    return torch.cat([boxes, area.unsqueeze(-1)], dim=-1)


def with_global_token(
    feats: torch.Tensor, locations: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prepend the global image token: mean of the real regions' features, location (0, 0, 1, 1, 1).

    feats (B, N, F), locations (B, N, 5), mask (B, N) -> (B, 1+N, F), (B, 1+N, 5), (B, 1+N).
    """
    m = mask.to(feats.dtype).unsqueeze(-1)  # (B, N, 1)
    mean = (feats * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1.0)  # (B, 1, F)
    loc = locations.new_tensor(GLOBAL_LOCATION).expand(feats.shape[0], 1, 5)
    return (
        torch.cat([mean, feats], 1),
        torch.cat([loc, locations], 1),
        torch.cat([mask.new_ones(mask.shape[0], 1), mask], 1),
    )


class ImageEmbeddings(nn.Module):
    """LN(Linear(feature) + Linear(location)) -> dropout (one LayerNorm over the sum)."""

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.feat_fc = nn.Linear(config.visual_feat_dim, config.v_hidden_size)
        self.loc_fc = nn.Linear(5, config.v_hidden_size)
        self.layer_norm = nn.LayerNorm(config.v_hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)  # the reference uses the text dropout here

    def forward(self, feats: torch.Tensor, locations: torch.Tensor) -> torch.Tensor:
        if feats.shape[-1] != self.feat_fc.in_features:
            raise ValueError(
                f"visual_feats has feature size {feats.shape[-1]}, the model expects "
                f"visual_feat_dim={self.feat_fc.in_features}"
            )
        return self.dropout(self.layer_norm(self.feat_fc(feats) + self.loc_fc(locations)))


class CoAttentionLayer(nn.Module):
    """ViLBERT's connection layer (BertBiAttention + BertBiOutput + each stream's FFN), no self-attention:

    text queries attend to the vision keys/values, vision queries to the text ones, both computed from the
    layer's inputs with separate projections into the co-attention width; each result goes through its
    stream's residual + LN, then its stream's post-LN feed-forward.
    """

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        text, vision = config.text_sizes(), config.vision_sizes()
        # Each module's dropout is the one the reference applies to probabilities over ITS keys.
        self.vision_attn = MultiHeadAttention(
            config.co_sizes(config.v_attention_probs_dropout_prob), in_size=config.v_hidden_size
        )
        self.text_attn = MultiHeadAttention(
            config.co_sizes(config.attention_probs_dropout_prob), in_size=config.hidden_size
        )
        self.vision_output = AttentionOutput(vision, in_size=config.bi_hidden_size)
        self.text_output = AttentionOutput(text, in_size=config.bi_hidden_size)
        self.vision_ffn = FeedForward(vision)
        self.text_ffn = FeedForward(text)

    def forward(
        self,
        text: torch.Tensor,  # (B, T, H)
        text_mask: torch.Tensor | None,  # (B, 1, 1, T) additive
        vision: torch.Tensor,  # (B, N, Hv)
        vision_mask: torch.Tensor | None,  # (B, 1, 1, N) additive
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor | None, torch.Tensor | None]]:
        tq, tk, tv = self.text_attn.project(text)
        vq, vk, vv = self.vision_attn.project(vision)
        t_ctx, t2v = self.vision_attn.attend(tq, vk, vv, vision_mask, output_attentions)  # (B, T, Hb)
        v_ctx, v2t = self.text_attn.attend(vq, tk, tv, text_mask, output_attentions)  # (B, N, Hb)
        text = self.text_ffn(self.text_output(t_ctx, text))
        vision = self.vision_ffn(self.vision_output(v_ctx, vision))
        return text, vision, (t2v, v2t)


class ReluPooler(nn.Module):
    """ReLU(Linear(state at position 0)) into the co-attention width."""

    def __init__(self, in_size: int, out_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, out_size)

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.dense(seq[:, 0]))


class VilbertModel(ModelBase):
    ROLE = "encoder"

    def __init__(self, config: VilbertConfig, init: bool = True) -> None:
        super().__init__(config)
        if not config.global_image_token:
            raise ValueError("VilbertConfig.global_image_token=false: the vision pooler reads the global token")
        self.embeddings = TextEmbeddings(config)
        self.image_embeddings = ImageEmbeddings(config)
        self.text_layers = nn.ModuleList(TransformerLayer(config.text_sizes()) for _ in range(config.num_hidden_layers))
        self.vision_layers = nn.ModuleList(
            TransformerLayer(config.vision_sizes()) for _ in range(config.v_num_hidden_layers)
        )
        self.co_layers = nn.ModuleList(CoAttentionLayer(config) for _ in config.v_biattention_id)
        self.text_pooler = ReluPooler(config.hidden_size, config.bi_hidden_size)
        self.vision_pooler = ReluPooler(config.v_hidden_size, config.bi_hidden_size)
        self.schedule = config.schedule()
        if init:
            self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T) long
        attention_mask: torch.Tensor | None,  # (B, T) 1 = real token
        visual_feats: torch.Tensor,  # (B, N, F)
        visual_boxes: torch.Tensor,  # (B, N, 4) x1y1x2y2 / image w,h
        visual_mask: torch.Tensor | None = None,  # (B, N) 1 = real box
        token_type_ids: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> VilbertModelOutput:
        b, n = visual_feats.shape[:2]
        if visual_feats.dim() != 3 or visual_boxes.shape != (b, n, 4) or b != input_ids.shape[0]:
            raise ValueError(
                f"visual_feats must be (B, N, F) and visual_boxes (B, N, 4) with B = {input_ids.shape[0]}; "
                f"got {tuple(visual_feats.shape)} and {tuple(visual_boxes.shape)}"
            )
        wdtype = self.text_pooler.dense.weight.dtype
        if visual_mask is None:
            visual_mask = input_ids.new_ones(b, n)
        feats, locs, vmask = with_global_token(
            visual_feats.to(wdtype), region_locations(visual_boxes.to(wdtype)), visual_mask
        )  # (B, 1+N, F), (B, 1+N, 5), (B, 1+N)
        dtype = compute_dtype(self.text_pooler.dense.weight)
        text_mask, vision_mask = additive_mask(attention_mask, dtype), additive_mask(vmask, dtype)

        text = self.embeddings(input_ids, token_type_ids)  # (B, T, H)
        vision = self.image_embeddings(feats, locs)  # (B, 1+N, Hv)
        att: dict[str, list[torch.Tensor]] = {"text": [], "vision": [], "text_to_vision": [], "vision_to_text": []}
        for kind, i in self.schedule:
            if kind == "text":
                text, p = self.text_layers[i](text, text_mask, output_attentions)
                att["text"].append(p)
            elif kind == "vision":
                vision, p = self.vision_layers[i](vision, vision_mask, output_attentions)
                att["vision"].append(p)
            else:
                text, vision, (t2v, v2t) = self.co_layers[i](text, text_mask, vision, vision_mask, output_attentions)
                att["text_to_vision"].append(t2v)
                att["vision_to_text"].append(v2t)
        t_pool, v_pool = self.text_pooler(text), self.vision_pooler(vision)  # (B, Hb) each
        fused = t_pool * v_pool if self.config.fusion_method == "mul" else t_pool + v_pool
        attentions = {k: tuple(v) for k, v in att.items()} if output_attentions else None
        return VilbertModelOutput(text, vision[:, 1:], fused, t_pool, v_pool, vision[:, 0], attentions)
