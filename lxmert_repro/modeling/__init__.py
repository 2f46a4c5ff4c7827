"""Models: one interface (base.py), LXMERT (pretraining, VQA/GQA), the NLVR2 pair model of every architecture,
checkpoint I/O; pretraining objectives apart from architectures."""

from .base import ModelBase, ModelConfig
from .checkpoint import build_model, export_reference, export_transformers, load_model, read_checkpoint, save_model
from .config import LxmertConfig, load_config
from .convert import CheckpointError, LoadReport
from .model import LxmertModel, LxmertModelOutput
from .nlvr2 import LxmertForNLVR2, LxmertPairOutput, NLVR2Model, PairOutput
from .objectives import PretrainObjectives
from .pretraining import LxmertForPreTraining, LxmertPreTrainingOutput
from .vqa import LxmertForVQA, LxmertVQAOutput

__all__ = [
    "ModelBase",
    "ModelConfig",
    "PretrainObjectives",
    "LxmertConfig",
    "load_config",
    "LxmertModel",
    "LxmertModelOutput",
    "LxmertForPreTraining",
    "LxmertPreTrainingOutput",
    "LxmertForVQA",
    "LxmertVQAOutput",
    "NLVR2Model",
    "PairOutput",
    "LxmertForNLVR2",
    "LxmertPairOutput",
    "build_model",
    "save_model",
    "load_model",
    "read_checkpoint",
    "export_transformers",
    "export_reference",
    "CheckpointError",
    "LoadReport",
]
