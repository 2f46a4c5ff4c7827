"""ViLBERT (Lu et al. 2019): two streams joined by co-attention, as facebookresearch/vilbert-multi-task
vilbert/vilbert.py with config/bert_base_6layer_6conect.json; its state-dict naming both ways (io.py)."""

from .config import VilbertConfig
from .model import CoAttentionLayer, VilbertModel, VilbertModelOutput
from .pretraining import VilbertForPreTraining, VilbertPreTrainingOutput
from .vqa import VilbertForVQA, VilbertVQAOutput

__all__ = [
    "VilbertConfig",
    "CoAttentionLayer",
    "VilbertModel",
    "VilbertModelOutput",
    "VilbertForPreTraining",
    "VilbertPreTrainingOutput",
    "VilbertForVQA",
    "VilbertVQAOutput",
]
