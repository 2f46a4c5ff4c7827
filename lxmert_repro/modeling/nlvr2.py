"""The NLVR2 role of every architecture: one sentence, K images; the architecture's encoder runs on the B·K
(sentence, image) pairs and the pair head classifies the K pooled vectors concatenated (K·Hp, Hp =
``config.pooled_size``; airsplay/lxmert src/tasks/nlvr2_model.py: K = 2, 2H -> 2 classes).

One class for all architectures: it builds ``config.model_class("encoder")`` and keeps it under
``config.ENCODER_PREFIX``, so its state-dict keys are ``<prefix>.*`` + ``pair_head.*`` (LXMERT: ``lxmert.*``),
the same names the architecture's other head models use for their encoder."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import HeadModel, ModelConfig, model_output


@model_output
class PairOutput:
    logits: torch.Tensor  # (B, C)
    loss: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None  # (B, K·Hp)
    attentions: Any = None  # the encoder's, over the B·K pairs (row b·K + k)


def flatten_images(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
    visual_feats: torch.Tensor,
    visual_boxes: torch.Tensor,
    visual_mask: torch.Tensor | None,
) -> tuple[int, tuple[torch.Tensor | None, ...]]:
    """(B, T) text with (B, K, N, ·) images -> K and the B·K pairs, row b·K + k = (sentence b, image k of b).

    repeat_interleave on the text and reshape on the images give the same row order, so pair b·K + k never mixes
    examples; the head undoes it with ``view(B, K·Hp)``."""
    if visual_feats.dim() != 4:
        raise ValueError(f"visual_feats must be (B, K, N, F) for a multi-image task, got {tuple(visual_feats.shape)}")
    B, K, N, Fd = visual_feats.shape
    if input_ids.shape[0] != B:
        raise ValueError(f"{input_ids.shape[0]} sentences for {B} examples of images")

    def rep(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.repeat_interleave(K, dim=0)  # (B·K, T)

    mask = None if visual_mask is None else visual_mask.reshape(B * K, N)
    return K, (
        rep(input_ids),
        rep(attention_mask),
        visual_feats.reshape(B * K, N, Fd),
        visual_boxes.reshape(B * K, N, visual_boxes.shape[-1]),
        mask,
        rep(token_type_ids),
    )


class PairHead(nn.Module):
    """Linear(K·Hp, K·Hp) -> GELU -> LayerNorm -> Linear(K·Hp, classes) over the concatenated pooled vectors."""

    def __init__(self, config: ModelConfig, images_per_example: int = 2, num_classes: int = 2) -> None:
        super().__init__()
        d = images_per_example * config.pooled_size
        self.dense = nn.Linear(d, d)
        self.layer_norm = nn.LayerNorm(d, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(d, num_classes)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layer_norm(F.gelu(self.dense(pooled))))


class NLVR2Model(HeadModel):
    """Any architecture's encoder + pair head; cross-entropy over {False, True} (label 1 = True), not rescaled."""

    ROLE = "nlvr2"
    images_per_example = 2

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)  # the encoder, under config.ENCODER_PREFIX
        self.pair_head = PairHead(config, self.images_per_example, 2)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, T)
        attention_mask: torch.Tensor | None,  # (B, T)
        visual_feats: torch.Tensor,  # (B, K, N, F)
        visual_boxes: torch.Tensor,  # (B, K, N, 4)
        visual_mask: torch.Tensor | None = None,  # (B, K, N)
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,  # (B,) long, 1 = the statement is true
        output_attentions: bool = False,
    ) -> PairOutput:
        B = input_ids.shape[0]
        K, pairs = flatten_images(input_ids, attention_mask, token_type_ids, visual_feats, visual_boxes, visual_mask)
        if K != self.images_per_example:
            raise ValueError(f"{type(self).__name__} takes {self.images_per_example} images per example, got {K}")
        ids, attn, feats, boxes, vmask, types = pairs
        enc = self.encoder(ids, attn, feats, boxes, vmask, types, output_attentions)
        pooled = enc.pooled_output.reshape(B, K * enc.pooled_output.shape[-1])  # (B, K·Hp): example b's K pairs
        logits = self.pair_head(pooled)  # (B, 2)
        loss = None if labels is None else F.cross_entropy(logits.float(), labels, ignore_index=-1)  # as the original
        return PairOutput(logits, loss, pooled, enc.attentions)

    @classmethod
    def from_pretraining(cls, pretrained: nn.Module) -> NLVR2Model:
        """The encoder of ``pretrained`` (its architecture's encoder, or a pretraining / VQA / NLVR2 model holding
        one); the pair head fresh (the original loads no head)."""
        model = cls(pretrained.config)
        model.load_encoder_from(pretrained)
        return model


# The names of the LXMERT-only class this one replaced: checkpoints written before record
# "lxmert_repro.modeling.nlvr2.LxmertForNLVR2" as their model_class, and load through this alias.
LxmertForNLVR2 = NLVR2Model
LxmertPairOutput = PairOutput
