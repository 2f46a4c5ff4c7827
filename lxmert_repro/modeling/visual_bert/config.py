"""VisualBERT configuration. Defaults: the COCO-pretrained base model of transformers'
VisualBertConfig / uclanlp visualbert (BERT-base sizes, 2048-d detector features)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..base import ModelBase, ModelConfig, resolve_class

VQA_LOSSES = ("kl", "bce")
ONE_SEQUENCE_NLVR2 = "lxmert_repro.modeling.visual_bert.nlvr2.VisualBertForVisualReasoning"


@dataclass
class VisualBertConfig(ModelConfig):
    MODEL_CLASSES: ClassVar[dict[str, str]] = {
        "encoder": "lxmert_repro.modeling.visual_bert.model.VisualBertModel",
        "pretraining": "lxmert_repro.modeling.visual_bert.pretraining.VisualBertForPreTraining",
        "vqa": "lxmert_repro.modeling.visual_bert.vqa.VisualBertForVQA",
        "nlvr2": "lxmert_repro.modeling.nlvr2.NLVR2Model",
    }
    ENCODER_PREFIX: ClassVar[str] = "visual_bert"
    ADAPTERS: ClassVar[str] = "lxmert_repro.modeling.visual_bert.io"
    # + the fine-tuning choices: the VQA loss, which NLVR2 model an encoder becomes (checked against a loaded NLVR2
    # model's class), and the init-time copy of the text tables into the visual ones (nothing on loaded weights)
    RUN_FIELDS: ClassVar[frozenset[str]] = ModelConfig.RUN_FIELDS | {
        "vqa_loss",
        "nlvr2_one_sequence",
        "special_visual_initialize",
    }

    vocab_size: int = 30522  # BERT uncased WordPiece
    hidden_size: int = 768  # BERT-base
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact erf GELU
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    pad_token_id: int = 0  # BERT's [PAD] (transformers' VisualBertConfig default of 1 is a RoBERTa leftover)
    visual_feat_dim: int = 2048  # transformers: visual_embedding_dim (2048 COCO/VQA, 1024 NLVR2, 512 VCR)
    # Token type of the region tokens: transformers defaults to 1; the uclanlp code and MMF use 0.
    visual_token_type: int = 1
    # Copy the text token-type / position tables into the visual ones at init (transformers default).
    special_visual_initialize: bool = True
    # VisualBERT feeds no box coordinates (faithful: False). True = ablation: + Linear(4 -> H)(boxes).
    use_boxes: bool = False
    visual_pos_dim: int = 4  # x1, y1, x2, y2 / image w, h (only with use_boxes)
    # VQA head (transformers' VisualBertForQuestionAnswering): the hidden state at index (text length - 2),
    # dropout, Linear(H, answers); its loss is KL(soft targets || softmax) averaged over the batch ("kl");
    # "bce" = LXMERT's recipe (BCE x answers) for comparisons on one fine-tuning recipe.
    vqa_loss: str = "kl"
    # Which row of the matching head means "the caption matches": 0 in transformers' docstring (our default and
    # what our exports mean); 1 in the uclanlp code -- and so in its .th checkpoints and in transformers
    # directories converted from them (transformers' converter copies the head unchanged).
    itm_match_class: int = 0
    sparse_predictions: bool = True  # MLM logits only where a label exists (same loss, less work)
    # NLVR2 model (task=nlvr2). False: the task's pair encoding (modeling/nlvr2.py::NLVR2Model, every architecture's
    # default). True: VisualBERT's own (uclanlp/visualbert; transformers' VisualBertForVisualReasoning): both images'
    # regions in one sequence after the text, region token type = image index, dropout + Linear(H, 2) on the pooled
    # vector (visual_bert/nlvr2.py).
    nlvr2_one_sequence: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"VisualBertConfig: hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ("gelu", "relu"):
            raise ValueError(f"VisualBertConfig: hidden_act must be 'gelu' or 'relu', got {self.hidden_act!r}")
        if self.vqa_loss not in VQA_LOSSES:
            raise ValueError(f"VisualBertConfig: vqa_loss must be one of {VQA_LOSSES}, got {self.vqa_loss!r}")
        if self.itm_match_class not in (0, 1):
            raise ValueError(f"VisualBertConfig: itm_match_class must be 0 or 1, got {self.itm_match_class}")
        if not 0 <= self.visual_token_type < self.type_vocab_size:
            raise ValueError(f"VisualBertConfig: visual_token_type must be in [0, {self.type_vocab_size})")
        self.extra = dict(self.extra or {})

    def model_class(self, role: str) -> type[ModelBase]:
        if role == "nlvr2" and self.nlvr2_one_sequence:
            return resolve_class(ONE_SEQUENCE_NLVR2, ModelBase, type(self).__name__)
        return super().model_class(role)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads
