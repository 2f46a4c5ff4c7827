"""LXMERT model configuration: one dataclass, also instantiated by Hydra (`lxmert_repro/configs/model/*.yaml`).

Defaults are the paper's base model (Tan & Bansal 2019, section 4 and the public code airsplay/lxmert);
docs/faithful.md (sections 3 and 4) says where each number comes from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from .base import ModelConfig


@dataclass
class LxmertConfig(ModelConfig):
    """The architecture only; what it is trained on is ``PretrainObjectives`` (objectives.py)."""

    MODEL_CLASSES: ClassVar[dict[str, str]] = {
        "encoder": "lxmert_repro.modeling.model.LxmertModel",
        "pretraining": "lxmert_repro.modeling.pretraining.LxmertForPreTraining",
        "vqa": "lxmert_repro.modeling.vqa.LxmertForVQA",
        "nlvr2": "lxmert_repro.modeling.nlvr2.NLVR2Model",
    }
    ENCODER_PREFIX: ClassVar[str] = "lxmert"
    ADAPTERS: ClassVar[str] = "lxmert_repro.modeling.lxmert_io"

    # --- sizes (paper sec. 4 / BERT-base) ---
    vocab_size: int = 30522  # BERT uncased WordPiece
    hidden_size: int = 768
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact erf GELU, as BERT
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    initializer_range: float = 0.02  # N(0, 0.02) init, biases 0, LayerNorm (1, 0)
    embedding_padding_idx: int | None = 0  # quirk of the original: rows 0 of the 3 tables never train
    l_layers: int = 9  # language layers (paper: N_L = 9)
    r_layers: int = 5  # object-relationship layers (N_R = 5)
    x_layers: int = 5  # cross-modality layers (N_X = 5)
    visual_feat_dim: int = 2048  # Faster R-CNN RoI feature (bottom-up attention)
    visual_pos_dim: int = 4  # x1, y1, x2, y2 divided by image width/height

    # --- pretraining label spaces ---
    num_object_labels: int = 1600  # Visual Genome object classes
    num_attr_labels: int = 400  # Visual Genome attribute classes
    num_qa_labels: int = 9500  # answers of VQA + GQA + Visual7W used in pretraining QA

    # Compute MLM logits / feature regression only where a loss is taken (same loss, less work).
    sparse_predictions: bool = True

    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes carried into checkpoints

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(
                f"LxmertConfig: hidden_size ({self.hidden_size}) must be a multiple of "
                f"num_attention_heads ({self.num_attention_heads})"
            )
        if self.hidden_act not in ("gelu", "relu"):
            raise ValueError(f"LxmertConfig: hidden_act must be 'gelu' or 'relu', got {self.hidden_act!r}")
        self.extra = dict(self.extra or {})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads


def load_config(path: str | Path) -> ModelConfig:
    """A model config from a .json file (ours or ``model_config.json``: LXMERT) or a Hydra yaml of ``configs/model``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: model config file not found")
    if path.suffix == ".json":
        return LxmertConfig.from_json(path)
    if path.suffix in (".yaml", ".yml"):
        from hydra import compose, initialize_config_dir
        from hydra.utils import instantiate

        with initialize_config_dir(config_dir=str(path.resolve().parent), version_base=None):
            cfg = instantiate(compose(path.stem))
        if not isinstance(cfg, ModelConfig):
            raise ValueError(f"{path}: _target_ must build a model config, got {type(cfg).__name__}")
        return cfg
    raise ValueError(f"{path}: expected a .json or .yaml model config")
