"""ViLBERT configuration. Defaults: facebookresearch/vilbert-multi-task config/bert_base_6layer_6conect.json
(the multi-task model): BERT-base text stream, a 6-layer 1024-d vision stream, 6 co-attention layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..base import ModelConfig

FUSIONS = ("mul", "sum")


@dataclass(frozen=True)
class StreamSizes:
    """The sizes one BERT-style layer reads (text, vision or co-attention width)."""

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str
    hidden_dropout_prob: float
    attention_probs_dropout_prob: float
    layer_norm_eps: float

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


@dataclass
class VilbertConfig(ModelConfig):
    MODEL_CLASSES: ClassVar[dict[str, str]] = {
        "encoder": "lxmert_repro.modeling.vilbert.model.VilbertModel",
        "pretraining": "lxmert_repro.modeling.vilbert.pretraining.VilbertForPreTraining",
        "vqa": "lxmert_repro.modeling.vilbert.vqa.VilbertForVQA",
        "nlvr2": "lxmert_repro.modeling.nlvr2.NLVR2Model",
    }
    ENCODER_PREFIX: ClassVar[str] = "vilbert"
    ADAPTERS: ClassVar[str] = "lxmert_repro.modeling.vilbert.io"
    OBJECT_LABELS_WITH_BACKGROUND: ClassVar[bool] = True  # the region KL covers the background column too
    RUN_FIELDS: ClassVar[frozenset[str]] = ModelConfig.RUN_FIELDS | {
        "v_hidden_dropout_prob",
        "v_attention_probs_dropout_prob",
    }

    # --- text stream (BERT-base) ---
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-12
    # --- vision stream ---
    visual_feat_dim: int = 2048  # v_feature_size: detector RoI features
    v_hidden_size: int = 1024
    v_num_hidden_layers: int = 6
    v_num_attention_heads: int = 8
    v_intermediate_size: int = 1024
    v_hidden_act: str = "gelu"
    v_hidden_dropout_prob: float = 0.1
    v_attention_probs_dropout_prob: float = 0.1
    # --- co-attention ---
    bi_hidden_size: int = 1024
    bi_num_attention_heads: int = 8
    # Co-attention layer k runs after vision layers [.., v_biattention_id[k]) and text layers [.., t_biattention_id[k]).
    v_biattention_id: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4, 5])
    t_biattention_id: list[int] = field(default_factory=lambda: [6, 7, 8, 9, 10, 11])
    fusion_method: str = "mul"  # text pooled * vision pooled ("sum" in other configs of the repository)
    num_object_labels: int = 1601  # v_target_size: Visual Genome 1600 classes + background
    global_image_token: bool = True  # prepend the mean region feature with location (0, 0, 1, 1, 1)
    sparse_predictions: bool = True  # MLM logits only where a label exists (same loss)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, h, n in (
            ("hidden_size", self.hidden_size, self.num_attention_heads),
            ("v_hidden_size", self.v_hidden_size, self.v_num_attention_heads),
            ("bi_hidden_size", self.bi_hidden_size, self.bi_num_attention_heads),
        ):
            if h % n:
                raise ValueError(f"VilbertConfig: {name} ({h}) must be a multiple of its number of heads ({n})")
        if len(self.v_biattention_id) != len(self.t_biattention_id):
            raise ValueError("VilbertConfig: v_biattention_id and t_biattention_id must have the same length")
        for name, ids, layers in (
            ("v_biattention_id", self.v_biattention_id, self.v_num_hidden_layers),
            ("t_biattention_id", self.t_biattention_id, self.num_hidden_layers),
        ):
            if list(ids) != sorted(ids) or (ids and (ids[0] < 0 or ids[-1] >= layers)):
                raise ValueError(f"VilbertConfig: {name} must be ascending layer indices below {layers}, got {ids}")
        if self.fusion_method not in FUSIONS:
            raise ValueError(f"VilbertConfig: fusion_method must be one of {FUSIONS}, got {self.fusion_method!r}")
        self.v_biattention_id = list(self.v_biattention_id)
        self.t_biattention_id = list(self.t_biattention_id)
        self.extra = dict(self.extra or {})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def pooled_size(self) -> int:
        return self.bi_hidden_size  # the poolers project both streams to the co-attention width

    @property
    def embedding_padding_idx(self) -> None:
        return None  # BERT's tables: no padding rows kept at zero

    def text_sizes(self) -> StreamSizes:
        return StreamSizes(
            self.hidden_size,
            self.num_attention_heads,
            self.intermediate_size,
            self.hidden_act,
            self.hidden_dropout_prob,
            self.attention_probs_dropout_prob,
            self.layer_norm_eps,
        )

    def vision_sizes(self) -> StreamSizes:
        return StreamSizes(
            self.v_hidden_size,
            self.v_num_attention_heads,
            self.v_intermediate_size,
            self.v_hidden_act,
            self.v_hidden_dropout_prob,
            self.v_attention_probs_dropout_prob,
            self.layer_norm_eps,
        )

    def co_sizes(self, attention_dropout: float) -> StreamSizes:
        """Co-attention width (bi_hidden_size, bi_num_attention_heads) with the given attention dropout."""
        return StreamSizes(
            self.bi_hidden_size,
            self.bi_num_attention_heads,
            0,
            self.hidden_act,
            0.0,
            attention_dropout,
            self.layer_norm_eps,
        )

    def schedule(self) -> list[tuple[str, int]]:
        """The layer order of the reference encoder: ("text", i), ("vision", j), ("co", k) steps."""
        steps: list[tuple[str, int]] = []
        t = v = 0
        for k, (v_end, t_end) in enumerate(zip(self.v_biattention_id, self.t_biattention_id)):
            steps += [("text", i) for i in range(t, t_end)] + [("vision", j) for j in range(v, v_end)]
            steps.append(("co", k))
            t, v = t_end, v_end
        steps += [("vision", j) for j in range(v, self.v_num_hidden_layers)]
        steps += [("text", i) for i in range(t, self.num_hidden_layers)]
        return steps
