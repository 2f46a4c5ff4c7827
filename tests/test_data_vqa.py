"""VQADataset + VQACollator: soft target vectors, question ids, padding, workers."""

import numpy as np
import pytest
import torch
from data_helpers import PAD, make_records, make_store
from torch.utils.data import DataLoader

from lxmert_repro.data.answers import AnswerVocab
from lxmert_repro.data.vqa_dataset import VQACollator, VQADataset


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    written = make_store(path, feat_dtype="float32")
    records = make_records()
    records[2]["answers"], records[2]["answer_scores"] = ["yes", "blue", "unknown"], [0.3, 0.9, 1.0]
    return VQADataset(records, path, AnswerVocab(["no", "yes", "blue"])), written, records


def test_targets_and_batch(setup):
    ds, written, records = setup
    batch = VQACollator(num_answers=3, pad_token_id=PAD)([ds[i] for i in range(6)])
    expected = np.zeros((6, 3), np.float32)
    for i in (0, 4, 5):  # k even -> {"yes": 1, "no": .3}
        expected[i] = [0.3, 1.0, 0.0]
    expected[2] = [0.0, 0.3, 0.9]  # "unknown" is not in the vocabulary: no target
    np.testing.assert_allclose(batch.vqa_targets.numpy(), expected)
    assert batch.question_ids.tolist() == [r["question_id"] for r in records[:6]]
    assert batch.image_ids == ["img0"] * 5 + ["img1"]
    n0, n1 = written["img0"]["boxes"].shape[0], written["img1"]["boxes"].shape[0]
    assert batch.visual_feats.shape == (6, max(n0, n1), 16)
    np.testing.assert_array_equal(batch.visual_feats[5, :n1].numpy(), written["img1"]["features"])
    assert batch.visual_mask[5].sum() == n1 and (batch.visual_feats[5, n1:] == 0).all()
    assert batch.mlm_labels is None and batch.itm_labels is None
    lengths = [len(r["input_ids"]) for r in records[:6]]
    assert batch.attention_mask.sum(1).tolist() == lengths


def test_workers_and_fixed_padding(setup):
    ds, _, _ = setup
    coll = VQACollator(num_answers=3, pad_token_id=PAD, pad_to=20, max_boxes=36)
    a = list(DataLoader(ds, batch_size=7, collate_fn=coll, num_workers=0))
    b = list(DataLoader(ds, batch_size=7, collate_fn=coll, num_workers=2))
    for x, y in zip(a, b):
        assert x.input_ids.shape[1] == 20 and x.visual_feats.shape[1] == 36
        for f in (
            "input_ids",
            "attention_mask",
            "visual_feats",
            "visual_boxes",
            "visual_mask",
            "vqa_targets",
            "question_ids",
        ):
            assert torch.equal(getattr(x, f), getattr(y, f)), f


def test_too_many_boxes_for_fixed_padding_is_named(setup):
    ds, _, _ = setup
    with pytest.raises(ValueError, match="'img0' has 10 boxes, more than the collator's max_boxes=4"):
        VQACollator(num_answers=3, max_boxes=4)([ds[0]])
    capped = VQADataset(ds.records, ds.regions.store, ds.answers, max_boxes=4)
    assert VQACollator(num_answers=3, max_boxes=4)([capped[0]]).visual_feats.shape == (1, 4, 16)
