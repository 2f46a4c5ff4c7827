"""Evaluation: the official VQA accuracy and prediction files."""

from lxmert_repro.evaluation.predictions import read_predictions, write_predictions
from lxmert_repro.evaluation.vqa_metric import (
    SoftScoreEvaluator,
    VQAEvaluator,
    question_accuracy,
    score_prediction_file,
    vqa_accuracy,
)

__all__ = [
    "SoftScoreEvaluator",
    "VQAEvaluator",
    "question_accuracy",
    "read_predictions",
    "score_prediction_file",
    "vqa_accuracy",
    "write_predictions",
]
