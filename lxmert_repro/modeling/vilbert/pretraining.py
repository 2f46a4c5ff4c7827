"""VilbertForPreTraining: masked LM, masked-region classification (KL to the detector's class distribution)
and image-text matching on the fused pooled vector (vilbert-multi-task BertForMultiModalPreTraining,
visual_target 0).

Matching convention: the reference head (``cls.bi_seq_relationship``) has class 0 = match, 1 = random
caption (the opposite of LXMERT); its weights stay in that order, ``itm_logits`` is returned with
column 1 = match, as ``itm_labels`` and every architecture here.

Region target: each region's class distribution from the detector, as the feature store keeps it
(``region_class_probs`` (B, N, k), with ``region_class_ids`` (B, N, k) for a top-k store, None for a full one)
and AS STORED: the reference's target (``image_target``) is the detector's softmax over all 1601 columns,
background included, used unchanged; a top-k store gives that target with the other classes at 0 (no
renormalisation: the per-box loss is then s * KL(renormalised || prediction) + s * log s for the kept mass s,
the same minimum, weighted by s). Without a stored distribution, the target is the top class with its
confidence, 0 elsewhere (``obj_labels``, ``obj_conf``: the k = 1 case) -- logged once.
Columns: the detector's class order with the background LAST (column C), as the store and ``obj_labels``;
the reference's head has the background first (row 0): the checkpoint adapter (``io.py``) reorders its rows.
"""

from __future__ import annotations

import logging
from dataclasses import field

import torch
import torch.nn.functional as F
from torch import nn

from ..base import model_output
from ..heads import MaskedLMHead, PredictionHeadTransform
from ..objectives import PretrainObjectives
from ..pretraining_base import PretrainingModel
from .config import VilbertConfig
from .model import VilbertModel

log = logging.getLogger(__name__)


@model_output
class VilbertPreTrainingOutput:
    loss: torch.Tensor | None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    mlm_logits: torch.Tensor | None = None  # (M, V) sparse at mlm_positions, else (B, T, V)
    mlm_positions: torch.Tensor | None = None
    region_logits: torch.Tensor | None = None  # (B, N, num_object_labels), the regions (global token excluded)
    itm_logits: torch.Tensor | None = None  # (B, 2), column 1 = match
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    attentions: dict[str, tuple[torch.Tensor, ...]] | None = None


def class_distribution_targets(probs: torch.Tensor, ids: torch.Tensor | None, num_classes: int) -> torch.Tensor:
    """(B, N, k) probabilities of classes ``ids`` (B, N, k) (negative = none), or of every class when ``ids`` is
    None -> (B, N, C) targets with the probabilities at their classes, 0 elsewhere."""
    if ids is None:
        if probs.shape[-1] != num_classes:
            raise ValueError(
                f"region_class_probs: {probs.shape[-1]} classes per box (a full distribution), the model has "
                f"num_object_labels={num_classes}"
            )
        return probs
    if ids.numel() and int(ids.max()) >= num_classes:
        raise ValueError(
            f"region_class_ids: class {int(ids.max())} in the batch, the model has num_object_labels={num_classes} "
            f"(classes 0..{num_classes - 1})"
        )
    out = probs.new_zeros(*ids.shape[:-1], num_classes)
    return out.scatter_add_(-1, ids.clamp(min=0), probs * (ids >= 0))


def top_class_targets(labels: torch.Tensor, conf: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(B, N) class ids (-100 on padding) and confidences -> (B, N, C) with the confidence at the class."""
    return class_distribution_targets(conf.unsqueeze(-1), labels.unsqueeze(-1), num_classes)


def region_kl_loss(logits: torch.Tensor, targets: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """sum_c t_c (log t_c - log softmax(logits)_c) over the masked regions, / their number (ViLBERT)."""
    kl = F.kl_div(F.log_softmax(logits.float(), dim=-1), targets.float(), reduction="none").sum(-1)  # (B, N)
    m = masked.float()
    return (kl * m).sum() / m.sum().clamp(min=1.0)


class RegionHead(nn.Module):
    """Transform (dense, GELU, LN in the vision width) -> Linear(Hv -> classes) (cls.imagePredictions)."""

    def __init__(self, config: VilbertConfig) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(config.vision_sizes())
        self.decoder = nn.Linear(config.v_hidden_size, config.num_object_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x))


class VilbertForPreTraining(PretrainingModel):
    SUPPORTED_OBJECTIVES = frozenset({"mlm", "itm", "region_kl"})
    _warned_fallback = False

    def __init__(self, config: VilbertConfig, objectives: PretrainObjectives | None = None) -> None:
        super().__init__(config, objectives)
        self.vilbert = VilbertModel(config, init=False)
        self.mlm_head = MaskedLMHead(config)  # text width; decoder tied to the word embeddings
        self.region_head = RegionHead(config)
        self.itm_head = nn.Linear(config.bi_hidden_size, 2)  # reference order: class 0 = match
        self.dropout = nn.Dropout(0.1)  # on the fused vector (fixed 0.1 in the reference heads)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        visual_feats: torch.Tensor,
        visual_boxes: torch.Tensor,
        visual_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        mlm_labels: torch.Tensor | None = None,  # (B, T) -100 = no loss
        itm_labels: torch.Tensor | None = None,  # (B,) 1 = matched (our convention)
        masked_boxes: torch.Tensor | None = None,  # (B, N) bool, regions whose features were masked
        region_class_probs: torch.Tensor | None = None,  # (B, N, k) the store's class distribution per box
        region_class_ids: torch.Tensor | None = None,  # (B, N, k) its classes; None: the k columns are the classes
        obj_labels: torch.Tensor | None = None,  # (B, N) top class (fallback target)
        obj_conf: torch.Tensor | None = None,  # (B, N) its confidence
        output_attentions: bool = False,
        **unused_targets: torch.Tensor | None,  # other objectives' targets: not ViLBERT's
    ) -> VilbertPreTrainingOutput:
        obj = self.objectives
        enc = self.vilbert(
            input_ids, attention_mask, visual_feats, visual_boxes, visual_mask, token_type_ids, output_attentions
        )
        out = VilbertPreTrainingOutput(
            loss=None,
            language_output=enc.language_output,
            vision_output=enc.vision_output,
            pooled_output=enc.pooled_output,
            attentions=enc.attentions,
        )
        losses: dict[str, torch.Tensor] = {}
        word_emb = self.vilbert.embeddings.word_embeddings.weight
        self.mlm_term(out, losses, enc.language_output, word_emb, mlm_labels)

        out.region_logits = self.region_head(enc.vision_output)  # (B, N, C)
        if masked_boxes is not None and obj.task_region_kl:
            num_classes = self.config.num_object_labels
            if region_class_probs is not None:
                region_targets = class_distribution_targets(region_class_probs, region_class_ids, num_classes)
            else:
                if obj_labels is None or obj_conf is None:
                    raise ValueError(
                        "region_kl needs region_class_probs, or obj_labels and obj_conf (top-class fallback)"
                    )
                if not VilbertForPreTraining._warned_fallback:
                    log.info(
                        "region_kl: the feature store keeps no class distributions; target = the detector's top "
                        "class with its confidence (extract with class_distribution_topk=K or full to keep them)"
                    )
                    VilbertForPreTraining._warned_fallback = True
                region_targets = top_class_targets(obj_labels, obj_conf, num_classes)
            masked = masked_boxes.bool() if visual_mask is None else masked_boxes.bool() & visual_mask.bool()
            losses["region_kl"] = obj.region_kl_loss_weight * region_kl_loss(out.region_logits, region_targets, masked)

        reference = self.itm_head(self.dropout(enc.pooled_output))  # (B, 2), class 0 = match
        self.itm_term(out, losses, reference.flip(-1), itm_labels)
        return self.finish(out, losses)
