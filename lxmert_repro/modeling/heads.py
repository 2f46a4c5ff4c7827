"""Task heads on top of the encoder: MLM (tied decoder), ITM, masked-object heads, answer head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LxmertConfig
from .objectives import PretrainObjectives


class PredictionHeadTransform(nn.Module):
    """dense -> GELU -> LayerNorm, before the MLM decoder and the object heads."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.act = F.gelu if config.hidden_act == "gelu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.act(self.dense(x)))


class MaskedLMHead(nn.Module):
    """Transform, then a decoder tied to the word embeddings (passed in at call time) with its own bias."""

    def __init__(self, config: LxmertConfig) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor, word_embeddings: torch.Tensor) -> torch.Tensor:
        """x (..., H), word_embeddings (V, H) -> logits (..., V)."""
        return F.linear(self.transform(x), word_embeddings, self.bias)


def masked_lm_predictions(
    head: MaskedLMHead, hidden: torch.Tensor, word_embeddings: torch.Tensor, labels: torch.Tensor | None, sparse: bool
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """MLM logits; with ``sparse`` and labels, only where a label exists (the vocabulary-wide decoder is the
    costliest head). hidden (B, T, H), labels (B, T) -100 = none -> (logits (M, V) or (B, T, V),
    positions (B, T) bool or None, the labels matching the logits' rows)."""
    if labels is not None and sparse:
        positions = labels != -100
        return head(hidden[positions], word_embeddings), positions, labels[positions]
    return head(hidden, word_embeddings), None, labels


class VisualObjectHead(nn.Module):
    """Shared transform, then one decoder per masked-object task: obj (1600), attr (400), feat (F-d regression)."""

    def __init__(self, config: LxmertConfig, objectives: PretrainObjectives) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(config)
        sizes = {
            "obj": (objectives.visual_obj_loss, config.num_object_labels),
            "attr": (objectives.visual_attr_loss, config.num_attr_labels),
            "feat": (objectives.visual_feat_loss, config.visual_feat_dim),
        }
        self.decoders = nn.ModuleDict({name: nn.Linear(config.hidden_size, n) for name, (on, n) in sizes.items() if on})


class AnswerHead(nn.Module):
    """Linear(H -> 2H) -> GELU -> LayerNorm -> Linear(2H -> answers), on the pooled output (H = in_size,
    default hidden_size; ViLBERT's SimpleClassifier has the same layout on its 1024-d fused vector)."""

    def __init__(self, config: LxmertConfig, num_answers: int, in_size: int | None = None) -> None:
        super().__init__()
        h = in_size or config.hidden_size
        self.dense = nn.Linear(h, 2 * h)
        self.layer_norm = nn.LayerNorm(2 * h, eps=config.layer_norm_eps)
        self.classifier = nn.Linear(2 * h, num_answers)

    @property
    def num_answers(self) -> int:
        return self.classifier.out_features

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.layer_norm(F.gelu(self.dense(pooled))))
