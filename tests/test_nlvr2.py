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


ARCHITECTURES = ("lxmert_tiny", "visualbert_tiny", "vilbert_tiny")
POOLED = {"lxmert_tiny": 32, "visualbert_tiny": 32, "vilbert_tiny": 16}  # hidden_size, hidden_size, bi_hidden_size


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_model_pairs_each_sentence_with_its_own_two_images(arch):
    """logits[b] must equal the head over [pooled(sentence b, image b0); pooled(sentence b, image b1)], each pair
    encoded alone by the architecture's encoder: fails if the B·K flattening mixed examples (e.g. (K, B) order) or
    swapped the two images."""
    from model_helpers import model_config

    from lxmert_repro.data.pair_dataset import PairCollator
    from lxmert_repro.modeling import build_model

    torch.manual_seed(0)
    # initializer_range 0.2: ViLBERT's pooled vector is a product of two ReLU poolers, near 0 at the usual 0.02
    cfg = model_config(arch, vocab_size=120, visual_feat_dim=6, initializer_range=0.2)
    model = build_model(cfg, "nlvr2").eval()
    encoder = getattr(model, cfg.ENCODER_PREFIX)
    assert encoder.ROLE == "encoder" and type(encoder) is cfg.model_class("encoder")
    items = _items()
    for b, it in enumerate(items):  # distinct, non-constant features and boxes per image
        it.features = [f + 5 * torch.randn(f.shape).numpy() for f in it.features]
        it.boxes = [
            np.sort(np.random.default_rng(10 * b + k).random(x.shape, np.float32), -1) for k, x in enumerate(it.boxes)
        ]
    batch = PairCollator()(items)
    with torch.no_grad():
        out = model(**batch.model_inputs())
        assert out.pooled_output.shape == (3, 2 * POOLED[arch]) and out.logits.shape == (3, 2)
        for b, it in enumerate(items):
            pooled = []
            for k in range(2):
                enc = encoder(
                    torch.tensor(it.input_ids[None]),
                    torch.ones(1, 3, dtype=torch.long),
                    torch.tensor(it.features[k][None]),
                    torch.tensor(it.boxes[k][None]),
                )
                pooled.append(enc.pooled_output)
            assert (pooled[0] - pooled[1]).abs().max() > 5e-4  # the two images give different vectors: order checkable
            # padding to the batch's box count moves the float32 sums a little (< 1e-5); a mixed pair moves > 5e-4
            torch.testing.assert_close(out.pooled_output[b], torch.cat(pooled, -1)[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(out.logits[b], model.pair_head(torch.cat(pooled, -1))[0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("role", ["pretraining", "vqa"])
@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_from_pretraining_keeps_the_encoder_and_starts_a_fresh_pair_head(arch, role):
    from model_helpers import model_config

    from lxmert_repro.modeling import NLVR2Model, PretrainObjectives, build_model

    cfg = model_config(arch)
    torch.manual_seed(1)
    src = build_model(cfg, role, PretrainObjectives(), num_answers=3)
    model = cfg.model_class("nlvr2").from_pretraining(src)
    assert type(model) is NLVR2Model and model.config == cfg
    prefix = cfg.ENCODER_PREFIX
    encoder_state = getattr(src, prefix).state_dict()
    state = model.state_dict()
    head = {"pair_head." + k for k in ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias")}
    assert set(state) == {f"{prefix}.{k}" for k in encoder_state} | head | {
        "pair_head.classifier.weight",
        "pair_head.classifier.bias",
    }
    for k, v in encoder_state.items():
        assert torch.equal(state[f"{prefix}.{k}"], v), k
    assert model.pair_head.dense.weight.shape == (2 * POOLED[arch], 2 * POOLED[arch])
    assert model.pair_head.classifier.weight.shape == (2, 2 * POOLED[arch])
    fresh = cfg.model_class("nlvr2")(cfg)  # another draw of the init: the encoder differs, so the copy was real
    assert not torch.equal(
        fresh.state_dict()[f"{prefix}.embeddings.word_embeddings.weight"],
        state[f"{prefix}.embeddings.word_embeddings.weight"],
    )


def _two_image_inputs(cfg):
    from model_helpers import inputs_of, make_batch

    batch = make_batch(cfg, pad_boxes=True)
    two = {k: v for k, v in inputs_of(batch).items() if k not in ("visual_feats", "visual_boxes", "visual_mask")}
    two.update(
        {k: torch.stack([batch[k], batch[k].flip(0)], 1) for k in ("visual_feats", "visual_boxes", "visual_mask")}
    )
    return two


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_nlvr2_model_save_load_round_trip(arch, tmp_path):
    """Every architecture's NLVR2 model is saved with the generic class path and its own config class, and
    load_model rebuilds it: same type, same tensors, same logits; its encoder loads alone by role name."""
    from model_helpers import model_config

    from lxmert_repro.modeling import NLVR2Model, build_model, load_model, save_model
    from lxmert_repro.modeling.base import import_path

    cfg = model_config(arch)
    torch.manual_seed(4)
    model = build_model(cfg, "nlvr2").eval()
    save_model(model, tmp_path / "ck")
    meta = json.loads((tmp_path / "ck" / "model_config.json").read_text())
    assert meta["model_class"] == "lxmert_repro.modeling.nlvr2.NLVR2Model"
    assert meta["config_class"] == import_path(type(cfg))
    loaded = load_model(tmp_path / "ck").eval()
    assert type(loaded) is NLVR2Model and loaded.config == cfg and loaded.load_report.ok
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.state_dict()[k]), k
    two = _two_image_inputs(cfg)
    with torch.no_grad():
        a, b = model(**two).logits, loaded(**two).logits
    assert a.shape == (4, 2) and (a[0] - a[1]).abs().max() > 0
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    enc = load_model(tmp_path / "ck", "encoder", strict=False)
    assert type(enc) is cfg.model_class("encoder")
    for k, v in enc.state_dict().items():
        assert torch.equal(v, model.state_dict()[f"{cfg.ENCODER_PREFIX}.{k}"]), k


def test_an_architecture_without_the_nlvr2_role_is_refused_by_name():
    """The message task=nlvr2 gives (through ModelConfig.model_class) for a config whose table has no nlvr2 entry."""
    import dataclasses

    from model_helpers import model_config

    from lxmert_repro.modeling import build_model
    from lxmert_repro.modeling.visual_bert.config import VisualBertConfig

    @dataclasses.dataclass
    class NoPairConfig(VisualBertConfig):
        MODEL_CLASSES = {k: v for k, v in VisualBertConfig.MODEL_CLASSES.items() if k != "nlvr2"}

    cfg = NoPairConfig(**model_config("visualbert_tiny").to_dict())
    with pytest.raises(
        ValueError, match=r"NoPairConfig has no 'nlvr2' model; it has \['encoder', 'pretraining', 'vqa'\]"
    ):
        build_model(cfg, "nlvr2")


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


def _test_labels_and_majority(d: dict) -> tuple[dict[str, str], float]:
    """{uid: "True"/"False"} of the prepared test split and the majority label's share in % (50: balanced)."""
    import datasets

    test = datasets.load_from_disk(d["test"])
    labels = {u: a[0] for u, a in zip(test["uid"], test["answers"])}
    return labels, Counter(labels.values()).most_common(1)[0][1] / len(labels) * 100


def _finetune_cfg(d: dict, out, model: str, test: str | None, epochs: int, *extra: str):
    """The composed lxmert-finetune task=nlvr2 config of the tiny fine-tunes below: only model= differs."""
    return compose(
        "finetune",
        [o for o in TINY_TRAINER if not o.startswith("model=")]
        + [
            f"model={model}",
            "task=nlvr2",
            f"data.features={d['features']}",
            f"data.tokenizer_dir={d['tokenizer_dir']}",
            f"data.nlvr2.train={d['train']}",
            f"data.nlvr2.val={d['test']}",
            f"data.nlvr2.test={test or 'null'}",
            f"data.nlvr2.answers={d['answers']}",
            "trainer.batch_size=16",
            f"trainer.max_epochs={epochs}",
            "optim.lr=3e-4",
            "model.hidden_dropout_prob=0",
            "model.attention_probs_dropout_prob=0",
            f"paths.output_dir={out}",
            *extra,
        ],
    )


def test_nlvr2_finetune_loss_falls_beats_majority_writes_predictions(nlvr2_data, tmp_path):
    from lxmert_repro.evaluation.nlvr2_metric import nlvr2_scores, read_nlvr2_predictions
    from lxmert_repro.training.finetune import train_task
    from lxmert_repro.training.tracking import read_metrics

    d, out = nlvr2_data, tmp_path / "ft"
    cfg = _finetune_cfg(d, out, "lxmert_tiny", d["test"], 8)
    metrics = train_task(cfg)
    rows = [r["train/loss"] for r in read_metrics(out) if "train/loss" in r]
    assert sum(rows[-10:]) / 10 < 0.8 * sum(rows[:10]) / 10, rows
    labels, majority = _test_labels_and_majority(d)
    assert metrics["best/val/accuracy"] > majority + 10, (metrics, majority)
    preds = read_nlvr2_predictions(out / "predictions_test.csv")
    assert set(preds) == set(labels)
    official = nlvr2_scores(preds, labels)
    assert metrics["test/accuracy"] == pytest.approx(official["accuracy"])
    assert metrics["test/consistency"] == pytest.approx(official["consistency"])


@pytest.mark.parametrize(
    "arch, extra, model_class",
    [
        ("visualbert_tiny", (), "NLVR2Model"),
        ("vilbert_tiny", (), "NLVR2Model"),
        ("visualbert_tiny", ("model.nlvr2_one_sequence=true",), "VisualBertForVisualReasoning"),
    ],
    ids=["visualbert", "vilbert", "visualbert-one-sequence"],
)
def test_nlvr2_finetune_other_architectures(nlvr2_data, tmp_path, arch, extra, model_class):
    """lxmert-finetune task=nlvr2 model=<arch>: the same command as LXMERT's (the test above), one override apart;
    the NLVR2 model of that architecture is trained, its loss falls, its accuracy beats the majority label, and it
    reloads as that architecture's. Measured (best val accuracy): VisualBERT 100%, ViLBERT 98.3%, VisualBERT with
    both images in one sequence 100%."""
    from lxmert_repro.modeling import load_model
    from lxmert_repro.training.finetune import train_task
    from lxmert_repro.training.tracking import read_metrics

    d, out = nlvr2_data, tmp_path / "ft"
    metrics = train_task(_finetune_cfg(d, out, arch, None, 4, *extra))
    rows = [r["train/loss"] for r in read_metrics(out) if "train/loss" in r]
    assert sum(rows[-10:]) / 10 < 0.8 * sum(rows[:10]) / 10, rows
    assert metrics["best/val/accuracy"] > _test_labels_and_majority(d)[1] + 10, metrics
    model = load_model(out / "model_last")
    assert model.ROLE == "nlvr2" and type(model).__name__ == model_class
    assert type(model.config).__name__ == {"visualbert_tiny": "VisualBertConfig", "vilbert_tiny": "VilbertConfig"}[arch]


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
