"""LXMERT model: config, encoder, pretraining, VQA/GQA and NLVR2 models, checkpoint I/O."""
from .checkpoint import export_transformers, load_model, read_checkpoint, save_model
from .config import LxmertConfig, load_config
from .convert import CheckpointError, LoadReport
from .model import LxmertModel, LxmertModelOutput
from .nlvr2 import LxmertForNLVR2, LxmertPairOutput
from .pretraining import LxmertForPreTraining, LxmertPreTrainingOutput
from .vqa import LxmertForVQA, LxmertVQAOutput

__all__ = [
    "LxmertConfig",
    "load_config",
    "LxmertModel",
    "LxmertModelOutput",
    "LxmertForPreTraining",
    "LxmertPreTrainingOutput",
    "LxmertForVQA",
    "LxmertVQAOutput",
    "LxmertForNLVR2",
    "LxmertPairOutput",
    "save_model",
    "load_model",
    "read_checkpoint",
    "export_transformers",
    "CheckpointError",
    "LoadReport",
]
