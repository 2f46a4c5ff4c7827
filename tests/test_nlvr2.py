"""NLVR2: readers (LXMERT's json, the official jsonl), the official accuracy / consistency on a hand-computed case,
the pairing of each statement with ITS two images (collator and model), the easy-VQA pair task, and a tiny
fine-tune (task=nlvr2) whose loss falls and whose accuracy beats the majority label."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch
from task_helpers import partial, prepare_task
from training_helpers import TINY_TRAINER, compose

torch.set_num_threads(1)

LABELS = {
    "dev-1-0-0": "True",
    "dev-1-1-0": "False",
    "dev-1-2-0": "True",
    "dev-2-0-0": "True",
    "dev-2-1-0": "False",
    "dev-3-0-1": "False",
}
PREDS = {
    "dev-1-0-0": "True",
    "dev-1-1-0": "False",
    "dev-1-2-0": "true",
    "dev-2-0-0": "True",
    "dev-2-1-0": "True",
    "dev-3-0-1": "False",
}


def test_official_accuracy_and_consistency_hand_computed():
    from lxmert_repro.evaluation.nlvr2_metric import nlvr2_scores, sentence_group

    assert sentence_group("dev-850-3-0") == "dev-850--0"
    r = nlvr2_scores(PREDS, LABELS)
    # 5 of 6 right ("true" counts: compared lower-cased); groups dev-1--0 all right, dev-2--0 one wrong, dev-3--1 right
    assert r == {
        "accuracy": pytest.approx(500 / 6),
        "consistency": pytest.approx(200 / 3),
        "examples": 6,
        "sentences": 3,
    }
    with pytest.raises(ValueError, match="1 of 6 examples have no prediction.*dev-3-0-1"):
        nlvr2_scores({k: v for k, v in PREDS.items() if k != "dev-3-0-1"}, LABELS)


def test_readers_and_evaluate_cli(tmp_path):
    from lxmert_repro.data.formats import read_nlvr2
    from lxmert_repro.evaluation.nlvr2_metric import read_nlvr2_predictions, write_nlvr2_predictions
    from lxmert_repro.training.evaluate import run_evaluate

    lx = tmp_path / "valid.json"  # LXMERT's format: label 0/1, image ids given
    lx.write_text(
        json.dumps(
            [
                {
                    "identifier": k,
                    "img0": f"{k[:-2]}-img0",
                    "img1": f"{k[:-2]}-img1",
                    "label": int(v == "True"),
                    "sent": "two dogs.",
                    "uid": f"nlvr2_dev_{i}",
                }
                for i, (k, v) in enumerate(LABELS.items())
            ]
        )
    )
    official = tmp_path / "dev.jsonl"  # the official jsonl: label "True"/"False", images from the identifier
    official.write_text(
        "\n".join(
            json.dumps({"identifier": k, "sentence": "two dogs.", "label": v, "writer": "w1"})
            for k, v in LABELS.items()
        )
        + "\n"
    )
    a, b = read_nlvr2(lx), read_nlvr2(official)
    assert [(e.uid, e.images, e.labels, e.sentence) for e in a] == [(e.uid, e.images, e.labels, e.sentence) for e in b]
    assert a[0].images == ["dev-1-0-img0", "dev-1-0-img1"] and a[1].labels == {"False": 1.0}
    assert a[0].image_id == "dev-1-0-img0"
    p = tmp_path / "pred.csv"
    write_nlvr2_predictions(p, PREDS)
    assert p.read_text().splitlines()[0] == "dev-1-0-0,True" and read_nlvr2_predictions(p) == PREDS
    for ann in (lx, official):
        cfg = compose(
            "evaluate", ["task=nlvr2", f"predictions={p}", f"annotations={ann}", f"paths.output_dir={tmp_path}"]
        )
        assert run_evaluate(cfg)["consistency"] == pytest.approx(200 / 3)
    p.write_text("dev-1-0-0,yes\n")
    with pytest.raises(ValueError, match=r"pred.csv', line 1: expected 'identifier,True\|False'"):
        read_nlvr2_predictions(p)
    lx.write_text(json.dumps([{"identifier": "x-1-0-0", "img0": "a", "img1": "b", "sent": "s", "label": 2}]))
    with pytest.raises(ValueError, match=r"valid.json', entry 0 \(x-1-0-0\): field 'label' must be 0/1"):
        read_nlvr2(lx)


def _items(B=3, K=2, F=6):
    """B examples of K images; image (b, k) has 2 + b + k boxes, every feature equal to 10 b + k."""
    from lxmert_repro.data.pair_dataset import PairItem

    return [
        PairItem(
            np.array([101, 5 + b, 102]),
            b,
            [f"img{b}_{k}" for k in range(K)],
            [np.full((2 + b + k, 4), 0.1 * (k + 1), np.float32) for k in range(K)],
            [np.full((2 + b + k, F), 10.0 * b + k, np.float32) for k in range(K)],
            b % 2,
        )
        for b in range(B)
    ]


def test_collator_keeps_each_examples_images_together():
    from lxmert_repro.data.pair_dataset import PairCollator

    batch = PairCollator()(_items())
    assert batch.visual_feats.shape == (3, 2, 5, 6) and batch.visual_mask.shape == (3, 2, 5)  # N = 2 + 2 + 1
    for b in range(3):
        for k in range(2):
            n = 2 + b + k
            assert torch.all(batch.visual_feats[b, k, :n] == 10.0 * b + k) and torch.all(
                batch.visual_feats[b, k, n:] == 0
            )
            assert batch.visual_mask[b, k].sum() == n
    assert batch.class_labels.tolist() == [0, 1, 0] and batch.question_ids.tolist() == [0, 1, 2]
    blind = PairCollator(blind=True)(_items())
    assert torch.count_nonzero(blind.visual_feats) == 0 and torch.count_nonzero(blind.visual_boxes) == 0
    assert torch.equal(blind.visual_mask, batch.visual_mask)


def test_model_pairs_each_sentence_with_its_own_two_images():
    """logits[b] must equal the head over [pooled(sentence b, image b0); pooled(sentence b, image b1)], each pair
    encoded alone: fails if the B·K flattening mixed examples (e.g. (K, B) order) or swapped the two images."""
    from lxmert_repro.data.pair_dataset import PairCollator
    from lxmert_repro.modeling import LxmertConfig, LxmertForNLVR2

    torch.manual_seed(0)
    cfg = LxmertConfig(
        vocab_size=120,
        hidden_size=32,
        num_attention_heads=2,
        intermediate_size=64,
        l_layers=1,
        x_layers=1,
        r_layers=1,
        visual_feat_dim=6,
    )
    model = LxmertForNLVR2(cfg).eval()
    items = _items()
    for b, it in enumerate(items):  # distinct, non-constant features and boxes per image
        it.features = [f + 5 * torch.randn(f.shape).numpy() for f in it.features]
        it.boxes = [
            np.sort(np.random.default_rng(10 * b + k).random(x.shape, np.float32), -1) for k, x in enumerate(it.boxes)
        ]
    batch = PairCollator()(items)
    with torch.no_grad():
        out = model(**batch.model_inputs())
        for b, it in enumerate(items):
            pooled = []
            for k in range(2):
                enc = model.lxmert(
                    torch.tensor(it.input_ids[None]),
                    torch.ones(1, 3, dtype=torch.long),
                    torch.tensor(it.features[k][None]),
                    torch.tensor(it.boxes[k][None]),
                )
                pooled.append(enc.pooled_output)
            assert (pooled[0] - pooled[1]).abs().max() > 5e-4  # the two images give different vectors: order checkable
            torch.testing.assert_close(out.pooled_output[b], torch.cat(pooled, -1)[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out.logits[b], model.pair_head(torch.cat(pooled, -1))[0], rtol=1e-4, atol=1e-6)


def _truth(sent: str, left: tuple[str, str], right: tuple[str, str]) -> bool | None:
    """An independent reading of three of the statement templates (None: another template)."""
    if m := re.fullmatch(r"both images contain a (\w+)\.", sent):
        return left[1] == right[1] == m[1]
    if sent == "the two shapes have the same color.":
        return left[0] == right[0]
    if m := re.fullmatch(r"exactly one image contains a (\w+)\.", sent):
        return (left[1] == m[1]) + (right[1] == m[1]) == 1
    return None


def test_easy_vqa_pair_task():
    from lxmert_repro.data.easy_vqa_tasks import easy_vqa_questions, image_attributes, to_nlvr2

    rows = [
        ["what color is the shape?", "red", 0],
        ["is there not a circle?", "no", 0],
        ["what shape is present?", "triangle", 1],
        ["is a blue shape present?", "yes", 1],
        ["what color is the shape?", "red", 2],
        ["is there a green shape?", "yes", 2],  # contradictory: left out
        ["what color is the shape?", "red", 3],
    ]  # no shape known: left out
    assert image_attributes(rows) == {0: ("red", "circle"), 1: ("blue", "triangle")}
    attrs = image_attributes(easy_vqa_questions("test"))
    entries = to_nlvr2(attrs, "test", 60, seed=1)
    groups = Counter(e["identifier"].split("-")[1] for e in entries)
    assert len(entries) == 240 and set(groups.values()) == {4}
    checked = 0
    for n in groups:
        es = [e for e in entries if e["identifier"].split("-")[1] == n]
        assert sorted(e["label"] for e in es) == [0, 0, 1, 1] and len({e["sent"] for e in es}) == 1
        assert sorted(e["identifier"] for e in es) == [f"test-{n}-{p}-0" for p in range(4)]
        for e in es:
            want = _truth(e["sent"], attrs[int(e["img0"][5:])], attrs[int(e["img1"][5:])])
            if want is not None:
                assert want == bool(e["label"]), e
                checked += 1
    assert checked >= 20


@pytest.fixture(scope="module")
def nlvr2_data(tmp_path_factory):
    from lxmert_repro.data.easy_vqa_tasks import easy_vqa_questions, image_attributes, to_nlvr2
    from lxmert_repro.data.formats import read_nlvr2

    root = tmp_path_factory.mktemp("nlvr2")
    files = {}
    for split, n_images, n_statements in (("train", 120, 200), ("test", 40, 30)):
        attrs = {k: v for k, v in image_attributes(easy_vqa_questions(split)).items() if k < n_images}
        files[split] = root / f"{split}.json"
        # one statement ("both shapes are red.") a tiny model learns from scratch in seconds: each image alone
        # correlates with the label. Relational ones ("the same color") give no such first-order signal and need a
        # pretrained encoder (the demo runs all eight templates from the pretrained model).
        entries = to_nlvr2(attrs, split, n_statements, seed=3, templates=("both_color",), colors=("red",))
        files[split].write_text(json.dumps(entries))
    return prepare_task(
        root, {s: [partial(read_nlvr2, path=str(p))] for s, p in files.items()}, answers_list=["False", "True"]
    )


def test_nlvr2_finetune_loss_falls_beats_majority_writes_predictions(nlvr2_data, tmp_path):
    import datasets

    from lxmert_repro.evaluation.nlvr2_metric import nlvr2_scores, read_nlvr2_predictions
    from lxmert_repro.training.finetune import train_task
    from lxmert_repro.training.tracking import read_metrics

    d, out = nlvr2_data, tmp_path / "ft"
    cfg = compose(
        "finetune",
        TINY_TRAINER
        + [
            "task=nlvr2",
            f"data.features={d['features']}",
            f"data.tokenizer_dir={d['tokenizer_dir']}",
            f"data.nlvr2.train={d['train']}",
            f"data.nlvr2.val={d['test']}",
            f"data.nlvr2.test={d['test']}",
            f"data.nlvr2.answers={d['answers']}",
            "trainer.batch_size=16",
            "trainer.max_epochs=8",
            "optim.lr=3e-4",
            "model.hidden_dropout_prob=0",
            "model.attention_probs_dropout_prob=0",
            f"paths.output_dir={out}",
        ],
    )
    metrics = train_task(cfg)
    rows = [r["train/loss"] for r in read_metrics(out) if "train/loss" in r]
    assert sum(rows[-10:]) / 10 < 0.8 * sum(rows[:10]) / 10, rows
    test = datasets.load_from_disk(d["test"])
    labels = {u: a[0] for u, a in zip(test["uid"], test["answers"])}
    majority = Counter(labels.values()).most_common(1)[0][1] / len(labels) * 100  # 50: balanced per statement
    assert metrics["best/val/accuracy"] > majority + 10, (metrics, majority)
    preds = read_nlvr2_predictions(out / "predictions_test.csv")
    assert set(preds) == set(labels)
    official = nlvr2_scores(preds, labels)
    assert metrics["test/accuracy"] == pytest.approx(official["accuracy"])
    assert metrics["test/consistency"] == pytest.approx(official["consistency"])


def test_predict_refuses_a_pair_task_naming_the_right_command(tmp_path):
    from lxmert_repro.cli.predict import run_predict

    cfg = compose("predict", ["task=nlvr2", f"paths.output_dir={tmp_path}", f"checkpoint={tmp_path}", "questions=x"])
    with pytest.raises(ValueError, match="task=nlvr2 is scored on prepared splits with lxmert-evaluate"):
        run_predict(cfg)


def test_prepare_checks_both_images_of_every_pair(nlvr2_data, tmp_path):
    from lxmert_repro.data.formats import read_nlvr2
    from lxmert_repro.data.prepare import prepare
    from lxmert_repro.features.store import FeatureStore
    from lxmert_repro.text.tokenizer import TrainedWordPieceSource

    f = tmp_path / "train.json"
    f.write_text(
        json.dumps(
            [
                {
                    "identifier": "train-0-0-0",
                    "img0": "train_0",
                    "img1": "train_999",
                    "label": 1,
                    "sent": "both shapes are red.",
                }
            ]
        )
    )
    with pytest.raises(ValueError, match=r"split 'train': 1 image ids are not in the feature store .*\['train_999'\]"):
        prepare(
            {"train": [partial(read_nlvr2, path=str(f))]},
            tmp_path / "out",
            TrainedWordPieceSource(vocab_size=50),
            feature_store=FeatureStore(nlvr2_data["features"]),
            answers_list=["False", "True"],
        )
