"""LXMERT's masking rules as vectorised numpy functions of an explicit Generator (so seeds reproduce).

Both follow the public code's per-element scheme: draw u ~ U(0,1); the element is selected when
u < p; then u / p picks the action (< 0.8, < 0.9, else) so the split is 80/10/10 of the selected ones.
"""
from __future__ import annotations

import numpy as np

from lxmert_repro.modeling.losses import IGNORE_INDEX  # the label value every loss skips

# Object-masking actions per box (``box_ops``).
BOX_KEEP_UNMASKED = 0  # not selected
BOX_ZERO = 1  # selected, feature set to zero (80%)
BOX_RANDOM = 2  # selected, feature replaced by a box feature of another image (10%)
BOX_UNCHANGED = 3  # selected, feature left as it is (10%) but still predicted


def mask_tokens(input_ids: np.ndarray, rng: np.random.Generator, *, mask_token_id: int, vocab_size: int,
                special_ids: np.ndarray, prob: float = 0.15,
                special_lut: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MLM masking of one sentence: 15% of the non-special wordpieces; 80% -> [MASK], 10% -> a random
    token id (uniform over the vocabulary, as the public code), 10% unchanged.

    ``special_lut`` (optional, (vocab_size,) bool, True = special) is a faster stand-in for ``special_ids``.
    Returns (masked ids (T,), labels (T,) with the original id where selected, -100 elsewhere).
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    u = rng.random(ids.shape[0])
    special = special_lut[ids] if special_lut is not None else np.isin(ids, special_ids)
    selected = (u < prob) & ~special
    v = u / prob
    to_mask = selected & (v < 0.8)
    to_random = selected & (v >= 0.8) & (v < 0.9)
    random_ids = rng.integers(0, vocab_size, size=ids.shape[0])
    out = np.where(to_mask, mask_token_id, np.where(to_random, random_ids, ids))
    labels = np.where(selected, ids, IGNORE_INDEX)
    return out, labels


OBJECT_MASK_SPLIT = (0.8, 0.1, 0.1)  # LXMERT: zeroed / another image's feature / unchanged (ViLBERT: 0.9, 0, 0.1)


def object_mask_ops(num_boxes: int, rng: np.random.Generator, prob: float = 0.15,
                    split: tuple[float, float, float] = OBJECT_MASK_SPLIT) -> np.ndarray:
    """Masked-object actions for one image's boxes: each box selected with ``prob``; of those ``split`` =
    (zeroed, replaced by another image's box feature, unchanged). Returns (n,) int8 of BOX_* codes."""
    zero, rand, keep = (float(x) for x in split)
    if min(zero, rand, keep) < 0 or abs(zero + rand + keep - 1.0) > 1e-6:
        raise ValueError(f"object mask split {tuple(split)} must be 3 non-negative fractions that sum to 1")
    u = rng.random(num_boxes)
    v = u / prob
    ops = np.zeros(num_boxes, np.int8)
    selected = u < prob
    ops[selected & (v < zero)] = BOX_ZERO
    ops[selected & (v >= zero) & (v < zero + rand)] = BOX_RANDOM
    ops[selected & (v >= zero + rand)] = BOX_UNCHANGED
    return ops


def sample_answer(labels: dict[int, float] | tuple[np.ndarray, np.ndarray], rng: np.random.Generator) -> int:
    """One answer index drawn with probability proportional to its soft score (LXMERT's QA target)."""
    idx, scores = labels if isinstance(labels, tuple) else (np.fromiter(labels, np.int64), np.fromiter(labels.values(), np.float64))
    if len(idx) == 0:
        return IGNORE_INDEX
    if len(idx) == 1:
        return int(idx[0])
    p = np.asarray(scores, np.float64)
    total = p.sum()
    if total <= 0:
        return IGNORE_INDEX
    return int(idx[rng.choice(len(idx), p=p / total)])
