"""PretrainDataset + PretrainCollator on a real (small) feature store."""

import pickle

import numpy as np
import pytest
import torch
from data_helpers import CLS, MASK, PAD, SEP, VOCAB, make_records, make_store
from torch.utils.data import DataLoader

from lxmert_repro.data.answers import AnswerVocab
from lxmert_repro.data.batch import LxmertBatch
from lxmert_repro.data.masking import BOX_RANDOM, BOX_UNCHANGED, BOX_ZERO, IGNORE_INDEX
from lxmert_repro.data.pretrain_dataset import PretrainCollator, PretrainDataset
from lxmert_repro.features.store import ClassDist


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    written = make_store(path)
    records = make_records()
    answers = AnswerVocab(["no", "maybe", "yes"])
    ds = PretrainDataset(
        records,
        path,
        pad_token_id=PAD,
        cls_token_id=CLS,
        sep_token_id=SEP,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        answers=answers,
        seed=1,
    )
    return ds, written, records


def _original(item):
    return np.where(item.mlm_labels != IGNORE_INDEX, item.mlm_labels, item.input_ids)


def test_itm_negatives_never_share_the_image_and_rates(setup):
    ds, _, records = setup
    n_neg = total = 0
    for epoch in range(8):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            words = _original(it)[1:-1]
            img = int(records[i]["image_id"][3:])
            assert (words == words[0]).all()  # the sentence is one whole sentence of one image
            if it.itm_label == 1:
                assert words[0] == 100 + img
            else:
                assert words[0] != 100 + img
                assert it.qa_label == IGNORE_INDEX  # QA ignored for mismatched pairs
                n_neg += 1
            total += 1
    assert n_neg / total == pytest.approx(0.5, abs=0.05)  # 240 draws


def test_qa_label_sampled_from_soft_label(setup):
    ds, _, records = setup
    seen = []
    for epoch in range(30):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            it = ds[i]
            if it.itm_label == 1:
                if records[i]["answers"]:
                    seen.append(it.qa_label)
                else:
                    assert it.qa_label == IGNORE_INDEX
    seen = np.array(seen)
    assert set(seen) == {0, 2}  # "no" -> 0, "yes" -> 2, "maybe" never labelled
    assert (seen == 2).mean() == pytest.approx(1 / 1.3, abs=0.06)


def test_seeded_per_epoch_and_index(setup):
    ds, _, _ = setup
    ds.set_epoch(3)
    a, b = ds[5], ds[5]
    for f in ("input_ids", "mlm_labels", "box_ops", "random_feats"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    again = pickle.loads(pickle.dumps(ds))  # a worker's copy sees the same masks
    c = again[5]
    assert np.array_equal(a.input_ids, c.input_ids) and np.array_equal(a.box_ops, c.box_ops)
    diffs = 0
    for e in range(4, 12):
        ds.set_epoch(e)
        diffs += not (np.array_equal(ds[5].box_ops, a.box_ops) and np.array_equal(ds[5].input_ids, a.input_ids))
    assert diffs >= 6
    assert len(pickle.dumps(ds)) < 20000  # the store is reopened per worker, never pickled by value


@pytest.mark.parametrize("feat_dtype", [None, "float32"])
def test_collated_batch(setup, feat_dtype):
    ds, written, records = setup
    ds.set_epoch(0)
    items = [ds[i] for i in range(len(ds))]
    batch = PretrainCollator(pad_token_id=PAD, feat_dtype=feat_dtype)(items)
    assert isinstance(batch, LxmertBatch)
    B, N, F = len(items), 10, 16
    assert batch.visual_feats.shape == (B, N, F) and batch.feat_targets.shape == (B, N, F)
    # default: the store's dtype (float16 here), losslessly; float32 on request
    assert (
        batch.visual_feats.dtype == batch.feat_targets.dtype == (torch.float16 if feat_dtype is None else torch.float32)
    )
    T = max(len(it.input_ids) for it in items)
    assert batch.input_ids.shape == (B, T) == batch.attention_mask.shape == batch.mlm_labels.shape
    for b, it in enumerate(items):
        w = written[it.image_id]
        n, t = w["boxes"].shape[0], len(it.input_ids)
        assert batch.attention_mask[b].sum() == t and (batch.input_ids[b, t:] == PAD).all()
        assert (batch.mlm_labels[b, t:] == IGNORE_INDEX).all()
        assert batch.visual_mask[b].sum() == n and (batch.visual_mask[b, :n] == 1).all()
        np.testing.assert_array_equal(
            batch.feat_targets[b, :n].float().numpy(), w["features"].astype(np.float16).astype(np.float32)
        )
        assert (batch.feat_targets[b, n:] == 0).all() and (batch.visual_feats[b, n:] == 0).all()
        scale = np.array([w["img_w"], w["img_h"], w["img_w"], w["img_h"]], np.float32)
        np.testing.assert_allclose(batch.visual_boxes[b, :n].numpy(), w["boxes"] / scale, rtol=1e-6)
        assert batch.visual_boxes.min() >= 0 and batch.visual_boxes.max() <= 1
        assert (batch.obj_labels[b, :n].numpy() == w["obj_ids"]).all() and (
            batch.obj_labels[b, n:] == IGNORE_INDEX
        ).all()
        assert (batch.attr_labels[b, :n].numpy() == w["attr_ids"]).all() and (
            batch.attr_labels[b, n:] == IGNORE_INDEX
        ).all()
        np.testing.assert_allclose(batch.obj_conf[b, :n].numpy(), w["obj_conf"])
        ops = it.box_ops
        assert (batch.masked_boxes[b, :n].numpy() == (ops > 0)).all() and not batch.masked_boxes[b, n:].any()
        vf, ft = batch.visual_feats[b, :n], batch.feat_targets[b, :n]
        assert (vf[torch.from_numpy(ops == BOX_ZERO)] == 0).all()
        keep = torch.from_numpy((ops == 0) | (ops == BOX_UNCHANGED))
        assert torch.equal(vf[keep], ft[keep])
        img = int(it.image_id[3:])
        for row in vf[torch.from_numpy(ops == BOX_RANDOM)]:
            assert (
                abs(float(row.float().mean()) - 10 * img) > 4
            )  # another image's feature (image i's rows sit near 10*i)
    assert batch.itm_labels.tolist() == [it.itm_label for it in items]
    assert batch.qa_labels.tolist() == [it.qa_label for it in items]
    assert batch.image_ids == [it.image_id for it in items]


def test_object_masking_counts_and_random_rows_over_epochs(setup):
    ds, _, _ = setup
    ops = []
    for e in range(60):
        ds.set_epoch(e)
        for i in range(len(ds)):
            it = ds[i]
            ops.append(it.box_ops)
            assert it.random_feats.shape == ((it.box_ops == BOX_RANDOM).sum(), 16)
            img = int(it.image_id[3:])
            assert (np.abs(it.random_feats.astype(np.float32).mean(1) - 10 * img) > 4).all()
    ops = np.concatenate(ops)
    assert (ops > 0).mean() == pytest.approx(0.15, abs=0.02)  # ~14k boxes


def test_dataloader_workers_match_in_process(setup):
    ds, _, _ = setup
    ds.set_epoch(2)
    coll = PretrainCollator(pad_token_id=PAD, pad_to=20, max_boxes=12)
    ref = list(DataLoader(ds, batch_size=8, collate_fn=coll, num_workers=0))
    got = list(DataLoader(ds, batch_size=8, collate_fn=coll, num_workers=2))
    assert len(ref) == len(got) == 4
    for x, y in zip(ref, got):
        assert x.input_ids.shape[1] == 20 and x.visual_feats.shape[1:] == (12, 16)
        for name in LxmertBatch.MODEL_INPUTS + LxmertBatch.PRETRAIN_TARGETS:
            a, b = getattr(x, name), getattr(y, name)
            assert (a is None and b is None) or torch.equal(a, b), name


def test_missing_image_is_named(tmp_path, setup):
    ds, _, records = setup
    bad = PretrainDataset(
        records[:3] + [dict(records[0], image_id="nope")],
        ds.regions,
        pad_token_id=PAD,
        cls_token_id=CLS,
        sep_token_id=SEP,
        mask_token_id=MASK,
        vocab_size=VOCAB,
    )
    with pytest.raises(KeyError, match="nope"):
        bad[3]


@pytest.mark.parametrize("dist", [ClassDist(3, full=False), ClassDist(11, full=True)])
def test_batches_carry_the_stored_class_distributions(tmp_path, setup, dist):
    written = make_store(tmp_path / "s", class_dist=dist)
    ds = PretrainDataset(
        make_records(),
        tmp_path / "s",
        pad_token_id=PAD,
        cls_token_id=CLS,
        sep_token_id=SEP,
        mask_token_id=MASK,
        vocab_size=VOCAB,
        max_boxes=9,
    )
    items = [ds[i] for i in range(0, len(ds), 5)]  # one sentence of each image
    batch = PretrainCollator(pad_token_id=PAD)(items)
    B, N = batch.visual_mask.shape
    assert N == 9 and batch.region_class_probs.shape == (B, N, dist.k)
    assert batch.region_class_probs.dtype == torch.float32
    for b, it in enumerate(items):
        w, n = written[it.image_id], int(batch.visual_mask[b].sum())
        np.testing.assert_array_equal(batch.region_class_probs[b, :n].numpy(), w["class_probs"][:n])
        assert not batch.region_class_probs[b, n:].any()
        if not dist.full:
            np.testing.assert_array_equal(batch.region_class_ids[b, :n].numpy(), w["class_ids"][:n])
            assert not batch.region_class_ids[b, n:].any()
    if dist.full:
        assert batch.region_class_ids is None
    assert batch.pretrain_targets()["region_class_probs"] is batch.region_class_probs
    # a store without them: no such fields
    ds0, _, _ = setup
    plain = PretrainCollator(pad_token_id=PAD)([ds0[0], ds0[1]])
    assert plain.region_class_probs is None and plain.region_class_ids is None
