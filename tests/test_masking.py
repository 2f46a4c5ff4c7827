"""Masking statistics over many draws, special tokens never masked, seeds reproduce."""

import numpy as np
import pytest

from lxmert_repro.data.masking import (
    BOX_RANDOM,
    BOX_UNCHANGED,
    BOX_ZERO,
    IGNORE_INDEX,
    mask_tokens,
    object_mask_ops,
    sample_answer,
)

CLS, SEP, PAD, MASK, V = 101, 102, 0, 103, 30522
SPECIAL = np.array([PAD, CLS, SEP, MASK])


def test_mlm_rates_and_specials():
    rng = np.random.default_rng(0)
    sel = masked = rand = same = total = 0
    for _ in range(20000):
        ids = np.concatenate([[CLS], rng.integers(1000, 30000, 18), [SEP]])
        out, lab = mask_tokens(ids, rng, mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL)
        assert out[0] == CLS and out[-1] == SEP and lab[0] == IGNORE_INDEX and lab[-1] == IGNORE_INDEX
        s = lab != IGNORE_INDEX
        assert (lab[s] == ids[s]).all() and (out[~s] == ids[~s]).all()
        total += 18
        sel += s.sum()
        masked += (out[s] == MASK).sum()
        same += (out[s] == ids[s]).sum()
        rand += ((out[s] != MASK) & (out[s] != ids[s])).sum()
    assert sel / total == pytest.approx(0.15, abs=0.004)  # 360k tokens: sd ~0.0006
    assert masked / sel == pytest.approx(0.8, abs=0.01)
    assert rand / sel == pytest.approx(0.1, abs=0.008)
    assert same / sel == pytest.approx(0.1, abs=0.008)


def test_mlm_never_masks_padding_or_specials_even_at_p1():
    rng = np.random.default_rng(1)
    ids = np.array([CLS, 5000, 6000, SEP, PAD, PAD])
    out, lab = mask_tokens(ids, rng, mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL, prob=1.0)
    assert (lab == [IGNORE_INDEX, 5000, 6000, IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]).all()
    assert (out[[0, 3, 4, 5]] == ids[[0, 3, 4, 5]]).all()


def test_object_mask_rates():
    rng = np.random.default_rng(2)
    ops = np.concatenate([object_mask_ops(36, rng) for _ in range(20000)])
    sel = ops > 0
    assert sel.mean() == pytest.approx(0.15, abs=0.003)
    assert (ops[sel] == BOX_ZERO).mean() == pytest.approx(0.8, abs=0.01)
    assert (ops[sel] == BOX_RANDOM).mean() == pytest.approx(0.1, abs=0.008)
    assert (ops[sel] == BOX_UNCHANGED).mean() == pytest.approx(0.1, abs=0.008)


def test_same_seed_same_masks():
    ids = np.arange(1000, 1020)
    a = mask_tokens(ids, np.random.default_rng([7, 3, 11]), mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL)
    b = mask_tokens(ids, np.random.default_rng([7, 3, 11]), mask_token_id=MASK, vocab_size=V, special_ids=SPECIAL)
    assert all((x == y).all() for x, y in zip(a, b))
    assert (object_mask_ops(36, np.random.default_rng(5)) == object_mask_ops(36, np.random.default_rng(5))).all()


def test_sample_answer_follows_soft_scores():
    rng = np.random.default_rng(3)
    draws = np.array([sample_answer({7: 1.0, 9: 0.5}, rng) for _ in range(30000)])
    assert set(draws) == {7, 9}
    assert (draws == 7).mean() == pytest.approx(2 / 3, abs=0.01)
    assert sample_answer({}, rng) == IGNORE_INDEX and sample_answer({4: 0.3}, rng) == 4


def test_object_mask_split_vilbert():
    """ViLBERT's region masking: 15% of regions, 90% of those zeroed, the rest left unchanged (none replaced)."""
    rng = np.random.default_rng(7)
    ops = np.concatenate([object_mask_ops(36, rng, 0.15, split=(0.9, 0.0, 0.1)) for _ in range(20000)])
    selected = ops != 0
    assert abs(selected.mean() - 0.15) < 0.005
    assert abs((ops[selected] == BOX_ZERO).mean() - 0.9) < 0.01
    assert not (ops == BOX_RANDOM).any()
    assert abs((ops[selected] == BOX_UNCHANGED).mean() - 0.1) < 0.01
    with pytest.raises(ValueError, match="sum to 1"):
        object_mask_ops(4, rng, 0.15, split=(0.9, 0.2, 0.1))
