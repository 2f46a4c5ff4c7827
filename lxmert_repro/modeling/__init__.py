"""LXMERT model: config, encoder, pretraining and VQA models, checkpoint I/O."""
from .config import LxmertConfig
from .model import LxmertModel, LxmertModelOutput
from .pretraining import LxmertForPreTraining, LxmertPreTrainingOutput
from .vqa import LxmertForVQA, LxmertVQAOutput

__all__ = [
    "LxmertConfig",
    "LxmertModel",
    "LxmertModelOutput",
    "LxmertForPreTraining",
    "LxmertPreTrainingOutput",
    "LxmertForVQA",
    "LxmertVQAOutput",
]
