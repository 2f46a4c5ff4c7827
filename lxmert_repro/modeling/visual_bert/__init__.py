"""VisualBERT (Li et al. 2019): one BERT over the concatenation of text and region features.

As transformers' ``VisualBertModel`` / ``VisualBertForPreTraining`` / ``VisualBertForQuestionAnswering`` /
``VisualBertForVisualReasoning`` (the ``nlvr2_one_sequence`` option) compute it (models/visual_bert/modeling_visual_bert.py); checkpoints move both ways (io.py).
"""

from .config import VisualBertConfig
from .model import VisualBertModel, VisualBertModelOutput
from .nlvr2 import VisualBertForVisualReasoning
from .pretraining import VisualBertForPreTraining, VisualBertPreTrainingOutput
from .vqa import VisualBertForVQA, VisualBertVQAOutput

__all__ = [
    "VisualBertConfig",
    "VisualBertModel",
    "VisualBertModelOutput",
    "VisualBertForPreTraining",
    "VisualBertPreTrainingOutput",
    "VisualBertForVQA",
    "VisualBertVQAOutput",
    "VisualBertForVisualReasoning",
]
