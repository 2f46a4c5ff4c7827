"""LxmertForPreTraining: encoder + MLM, ITM, masked-object and QA heads, and the pretraining loss
(docs/faithful.md §4).

Which terms, their weights and denominators: ``PretrainObjectives`` (every LXMERT objective on by default).
Total = mlm_w * MLM + itm_w * ITM + qa_w * QA + normalizer * (obj + attr + feat), normalizer = 1/0.15.
"""

from __future__ import annotations

from dataclasses import field

import torch
from torch import nn

from . import losses as L
from .base import model_output
from .config import LxmertConfig
from .encoder import EncoderAttentions
from .heads import AnswerHead, MaskedLMHead, VisualObjectHead
from .model import LxmertModel
from .objectives import PretrainObjectives
from .pretraining_base import PretrainingModel


@model_output
class LxmertPreTrainingOutput:
    """Head outputs and losses.

    With ``config.sparse_predictions`` and targets given, ``mlm_logits`` is (M, V) at the positions where
    ``mlm_labels != -100`` (row-major order, ``mlm_positions`` marks them) and ``feat_pred`` is (K, F) at the
    real masked boxes (``feat_positions``); otherwise they cover every position: (B, T, V) and (B, N, F).
    ``losses`` holds each task's term as it enters ``loss`` (visual ones already multiplied by the normalizer).
    """

    loss: torch.Tensor | None
    losses: dict[str, torch.Tensor] = field(default_factory=dict)
    mlm_logits: torch.Tensor | None = None
    mlm_positions: torch.Tensor | None = None  # (B, T) bool when mlm_logits is sparse
    itm_logits: torch.Tensor | None = None  # (B, 2)
    obj_logits: torch.Tensor | None = None  # (B, N, num_object_labels)
    attr_logits: torch.Tensor | None = None  # (B, N, num_attr_labels)
    feat_pred: torch.Tensor | None = None
    feat_positions: torch.Tensor | None = None  # (B, N) bool when feat_pred is sparse
    qa_logits: torch.Tensor | None = None  # (B, num_qa_labels)
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    attentions: EncoderAttentions | None = None


class LxmertForPreTraining(PretrainingModel):
    SUPPORTED_OBJECTIVES = frozenset({"mlm", "itm", "obj", "attr", "feat", "qa"})

    def __init__(self, config: LxmertConfig, objectives: PretrainObjectives | None = None) -> None:
        super().__init__(config, objectives)
        objectives = self.objectives
        self.lxmert = LxmertModel(config, init=False)
        self.mlm_head = MaskedLMHead(config)
        self.itm_head = nn.Linear(config.hidden_size, 2)
        self.obj_head = VisualObjectHead(config, objectives) if objectives.task_obj_predict else None
        self.answer_head = AnswerHead(config, config.num_qa_labels) if objectives.task_qa else None
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
        itm_labels: torch.Tensor | None = None,  # (B,) 1 = matched
        obj_labels: torch.Tensor | None = None,  # (B, N) -100 on padding
        obj_conf: torch.Tensor | None = None,  # (B, N)
        attr_labels: torch.Tensor | None = None,
        attr_conf: torch.Tensor | None = None,
        feat_targets: torch.Tensor | None = None,  # (B, N, F) unmasked features
        masked_boxes: torch.Tensor | None = None,  # (B, N) bool
        qa_labels: torch.Tensor | None = None,  # (B,) -100 = none
        output_attentions: bool = False,
        **unused_targets: torch.Tensor | None,  # other objectives' targets (region_class_probs, ...): not LXMERT's
    ) -> LxmertPreTrainingOutput:
        obj = self.objectives
        enc = self.lxmert(
            input_ids, attention_mask, visual_feats, visual_boxes, visual_mask, token_type_ids, output_attentions
        )
        out = LxmertPreTrainingOutput(
            loss=None,
            language_output=enc.language_output,
            vision_output=enc.vision_output,
            pooled_output=enc.pooled_output,
            attentions=enc.attentions,
        )
        losses: dict[str, torch.Tensor] = {}
        word_emb = self.lxmert.embeddings.word_embeddings.weight  # tied decoder (V, H)

        self.mlm_term(out, losses, enc.language_output, word_emb, mlm_labels)
        self.itm_term(out, losses, self.itm_head(enc.pooled_output), itm_labels)  # LXMERT: column 1 = match

        if self.obj_head is not None:
            self._object_losses(
                out, losses, visual_mask, obj_labels, obj_conf, attr_labels, attr_conf, feat_targets, masked_boxes
            )

        if self.answer_head is not None:
            out.qa_logits = self.answer_head(enc.pooled_output)  # (B, A)
            if qa_labels is not None:
                losses["qa"] = obj.qa_loss_weight * L.qa_loss(out.qa_logits, qa_labels, itm_labels)

        return self.finish(out, losses)

    def _object_losses(
        self,
        out: LxmertPreTrainingOutput,
        losses: dict[str, torch.Tensor],
        visual_mask: torch.Tensor | None,
        obj_labels: torch.Tensor | None,
        obj_conf: torch.Tensor | None,
        attr_labels: torch.Tensor | None,
        attr_conf: torch.Tensor | None,
        feat_targets: torch.Tensor | None,
        masked_boxes: torch.Tensor | None,
    ) -> None:
        """Masked-object heads and their three losses, each multiplied by the visual loss normalizer."""
        cfg, obj = self.config, self.objectives
        head = self.obj_head
        assert head is not None
        hidden = head.transform(out.vision_output)  # (B, N, H)
        w, denom = obj.visual_loss_normalizer, obj.visual_loss_denominator
        label_tasks = (("obj", obj_labels, obj_conf), ("attr", attr_labels, attr_conf))
        for name, labels, conf in label_tasks:
            if name not in head.decoders:
                continue
            logits = head.decoders[name](hidden)  # (B, N, C)
            setattr(out, f"{name}_logits", logits)
            if labels is not None:
                if conf is None:
                    raise ValueError(f"{name}_labels given without {name}_conf (the detector confidence weights)")
                losses[name] = w * L.visual_label_loss(
                    logits, labels, conf, visual_mask, masked_boxes, obj.obj_attr_masked_only, denom
                )
        if "feat" in head.decoders:
            if feat_targets is not None and masked_boxes is not None:
                sel = masked_boxes.bool() if visual_mask is None else masked_boxes.bool() & visual_mask.bool()
                if cfg.sparse_predictions:
                    out.feat_positions = sel
                    out.feat_pred = head.decoders["feat"](hidden[sel])  # (K, F)
                else:
                    out.feat_pred = head.decoders["feat"](hidden)  # (B, N, F)
                losses["feat"] = w * L.feature_regression_loss(
                    out.feat_pred, feat_targets, masked_boxes, visual_mask, denom
                )
            else:
                out.feat_pred = head.decoders["feat"](hidden)  # (B, N, F)
