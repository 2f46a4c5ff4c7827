"""LXMERT model configuration: one dataclass, also instantiated by Hydra (`configs/model/*.yaml`).

Defaults are the paper's base model (Tan & Bansal 2019, section 4 and the public code airsplay/lxmert);
docs/faithful.md (sections 3 and 4) says where each number comes from.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

VISUAL_LOSS_DENOMINATORS = ("all_boxes", "masked_boxes")


@dataclass
class LxmertConfig:
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

    # --- pretraining tasks and loss weights (docs/faithful.md §4; faithful defaults) ---
    task_mask_lm: bool = True
    task_matched: bool = True  # image-text matching (ITM)
    task_obj_predict: bool = True
    task_qa: bool = True  # public code: QA throughout; paper: only the last 10 of 20 epochs
    visual_obj_loss: bool = True
    visual_attr_loss: bool = True
    visual_feat_loss: bool = True
    mlm_loss_weight: float = 1.0
    itm_loss_weight: float = 1.0
    qa_loss_weight: float = 1.0
    visual_loss_normalizer: float = 1 / 0.15  # public code: 1/0.15 on obj, attr, feat (transformers: 6.67)
    # Alternatives (not LXMERT's choice): obj/attr CE only on masked boxes; divide visual losses by
    # the number of masked boxes instead of all real boxes.
    obj_attr_masked_only: bool = False
    visual_loss_denominator: str = "all_boxes"
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
        if self.visual_loss_denominator not in VISUAL_LOSS_DENOMINATORS:
            raise ValueError(
                f"LxmertConfig: visual_loss_denominator must be one of {VISUAL_LOSS_DENOMINATORS}, "
                f"got {self.visual_loss_denominator!r}"
            )
        self.extra = dict(self.extra or {})

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> "LxmertConfig":
        """Build from a dict; unknown keys are an error naming them (a typo must not pass silently)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{source}: unknown LxmertConfig field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**values)

    @classmethod
    def from_json(cls, path: str | Path) -> "LxmertConfig":
        path = Path(path)
        try:
            values = json.loads(path.read_text())
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: model config file not found") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        if "config" in values and isinstance(values["config"], dict):
            values = values["config"]
        return cls.from_dict(values, source=str(path))

    def replace(self, **changes: Any) -> "LxmertConfig":
        return dataclasses.replace(self, **changes)


def load_config(path: str | Path) -> LxmertConfig:
    """An LxmertConfig from a .json file (ours or ``model_config.json``) or a Hydra yaml of ``configs/model``."""
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
        if not isinstance(cfg, LxmertConfig):
            raise ValueError(f"{path}: _target_ must build an LxmertConfig, got {type(cfg).__name__}")
        return cfg
    raise ValueError(f"{path}: expected a .json or .yaml model config")
