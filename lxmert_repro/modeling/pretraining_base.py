"""What every pretraining model shares: the objectives it keeps, the masked-LM and matching terms, the total.

A subclass sets ``SUPPORTED_OBJECTIVES``, has an ``mlm_head`` (MaskedLMHead) and computes its own other terms.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from . import losses as L
from .base import ModelBase, ModelConfig
from .heads import masked_lm_predictions
from .objectives import PretrainObjectives


class PretrainingModel(ModelBase):
    ROLE = "pretraining"
    SUPPORTED_OBJECTIVES: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: ModelConfig, objectives: PretrainObjectives | None = None) -> None:
        super().__init__(config)
        self.objectives = (objectives or PretrainObjectives()).restricted_to(
            self.SUPPORTED_OBJECTIVES, type(self).__name__
        )

    def mlm_term(
        self,
        out: Any,
        losses: dict[str, torch.Tensor],
        hidden: torch.Tensor,
        word_embeddings: torch.Tensor,
        mlm_labels: torch.Tensor | None,
    ) -> None:
        """Sets ``out.mlm_logits`` / ``out.mlm_positions`` (sparse when configured) and the weighted MLM loss."""
        out.mlm_logits, out.mlm_positions, targets = masked_lm_predictions(
            self.mlm_head, hidden, word_embeddings, mlm_labels, self.config.sparse_predictions
        )
        if mlm_labels is not None and self.objectives.task_mask_lm:
            losses["mlm"] = self.objectives.mlm_loss_weight * L.masked_lm_loss(out.mlm_logits, targets)

    def itm_term(
        self, out: Any, losses: dict[str, torch.Tensor], itm_logits: torch.Tensor, itm_labels: torch.Tensor | None
    ) -> None:
        """``itm_logits`` (B, 2) with column 1 = match, as ``itm_labels`` (1 = matched pair)."""
        out.itm_logits = itm_logits
        if itm_labels is not None and self.objectives.task_matched:
            losses["itm"] = self.objectives.itm_loss_weight * L.matching_loss(itm_logits, itm_labels)

    @staticmethod
    def finish(out: Any, losses: dict[str, torch.Tensor]) -> Any:
        out.losses = losses
        if losses:
            out.loss = torch.stack(list(losses.values())).sum()
        return out
