"""Model FLOPs of LXMERT (only: other architectures log no MFU) counted from the config: the numerator of model FLOP utilisation (MFU).

Only matrix products are counted (as ``torch.utils.flop_counter.FlopCounterMode`` does; embeddings lookups,
LayerNorm, softmax, GELU and dropout are not), a product of (r x k) by (k x c) being ``2 r k c``. With H the
hidden size, I the FFN size, T text tokens, N boxes, F the feature size, V the vocabulary, forward per sample:

- visual encoder: ``2 N F H`` (feature Linear) + ``2 N 4 H`` (box Linear); text embeddings: 0 (lookups);
- a single-stream layer over S positions (the l_layers language layers on T, the r_layers object-relationship
  layers on N): ``8 S H^2`` (q, k, v and output projections) + ``4 S^2 H`` (scores and context) + ``4 S H I`` (FFN);
- a cross-modality layer: the shared cross-attention ``8 (T + N) H^2 + 8 T N H`` (q, k, v, output of both
  streams; text-to-boxes and boxes-to-text scores and context), then one single-stream layer on each stream;
- pooler ``2 H^2``; pretraining heads: MLM ``2 M H (H + V)`` over its M rows, ITM ``4 H``, the object head's
  transform ``2 N H^2`` and decoders ``2 N H (objects + attributes)`` + ``2 K H F`` (feature regression over K
  rows), QA ``4 H^2 + 4 H A``; the VQA head ``4 H^2 + 4 H A``.

M and K are T and N with dense predictions; with ``sparse_predictions`` (the default) only labelled rows are
computed: M = tokens with an MLM label, K = real masked boxes. A training step costs ``TRAIN_FLOPS_PER_FORWARD``
forwards: the backward computes two products per forward product (input and weight gradients); it is 3x
exactly but for the feature and box Linears, whose inputs need no gradient (under 1% of a base step).
"""

from __future__ import annotations

from typing import TypeVar

from .config import LxmertConfig
from .objectives import PretrainObjectives

TRAIN_FLOPS_PER_FORWARD = 3

Count = TypeVar("Count", int, float)  # or a tensor of counts: every term is linear in M and K


def single_stream_layer_flops(cfg: LxmertConfig, s: int) -> int:
    """One self-attention + FFN layer over ``s`` positions, one sample."""
    h, i = cfg.hidden_size, cfg.intermediate_size
    return 8 * s * h * h + 4 * s * s * h + 4 * s * h * i


def encoder_flops(cfg: LxmertConfig, text_len: int, n_boxes: int) -> int:
    """Visual encoder, the three layer stacks and the pooler, one sample (forward)."""
    h, t, n = cfg.hidden_size, text_len, n_boxes
    visual = 2 * n * cfg.visual_feat_dim * h + 2 * n * cfg.visual_pos_dim * h
    cross = 8 * (t + n) * h * h + 8 * t * n * h + single_stream_layer_flops(cfg, t) + single_stream_layer_flops(cfg, n)
    return (
        visual
        + cfg.l_layers * single_stream_layer_flops(cfg, t)
        + cfg.r_layers * single_stream_layer_flops(cfg, n)
        + cfg.x_layers * cross
        + 2 * h * h
    )


def answer_head_flops(cfg: LxmertConfig, num_answers: int) -> int:
    """Linear(H -> 2H) and Linear(2H -> answers) on the pooled vector, one sample."""
    h = cfg.hidden_size
    return 4 * h * h + 4 * h * num_answers


def pretraining_forward_flops(
    cfg: LxmertConfig,
    batch_size: int,
    text_len: int,
    n_boxes: int,
    mlm_rows: Count | None = None,
    feat_rows: Count | None = None,
    objectives: PretrainObjectives | None = None,
) -> Count:
    """Forward FLOPs of ``LxmertForPreTraining`` on a (batch_size, text_len, n_boxes) batch.

    ``mlm_rows`` / ``feat_rows``: rows the sparse MLM decoder / feature regression compute over the whole batch
    (labelled tokens, real masked boxes); None = dense (every position), as without ``sparse_predictions``.
    ``objectives``: the model's (which object and QA heads it has); default every objective on.
    """
    obj = objectives or PretrainObjectives()
    h, b = cfg.hidden_size, batch_size
    m = b * text_len if mlm_rows is None or not cfg.sparse_predictions else mlm_rows
    k = b * n_boxes if feat_rows is None or not cfg.sparse_predictions else feat_rows
    total = b * (encoder_flops(cfg, text_len, n_boxes) + 4 * h)  # + ITM
    total += 2 * h * (h + cfg.vocab_size) * m  # MLM transform and tied decoder
    if obj.task_obj_predict:
        labels = (cfg.num_object_labels if obj.visual_obj_loss else 0) + (
            cfg.num_attr_labels if obj.visual_attr_loss else 0
        )
        total += b * 2 * n_boxes * h * (h + labels)
        if obj.visual_feat_loss:
            total += 2 * h * cfg.visual_feat_dim * k
    if obj.task_qa:
        total += b * answer_head_flops(cfg, cfg.num_qa_labels)
    return total


def vqa_forward_flops(cfg: LxmertConfig, batch_size: int, text_len: int, n_boxes: int, num_answers: int) -> int:
    """Forward FLOPs of ``LxmertForVQA``."""
    return batch_size * (encoder_flops(cfg, text_len, n_boxes) + answer_head_flops(cfg, num_answers))
