"""GQA: both readers on files in the real formats, the official evaluation on a hand-computed case, easy-VQA in
GQA's format, and a tiny fine-tune (task=gqa) whose loss falls and whose accuracy beats the majority answer."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from task_helpers import partial, prepare_task
from training_helpers import TINY_TRAINER, compose

torch.set_num_threads(1)


def _q(question, answer, structural, semantic, program, group=None, entailed=(), balanced=True, detailed="x"):
    return {
        "imageId": "n1",
        "question": question,
        "answer": answer,
        "fullAnswer": "",
        "isBalanced": balanced,
        "types": {"structural": structural, "semantic": semantic, "detailed": detailed},
        "semantic": [{"operation": o, "argument": a, "dependencies": []} for o, a in program],
        "groups": {"global": group, "local": ""},
        "entailed": list(entailed),
        "equivalent": [],
        "annotations": {},
    }


QUESTIONS = {  # ids with leading zeros, as GQA's
    "01": _q(
        "what color is the ball?",
        "red",
        "query",
        "attr",
        [("select", "ball"), ("query", "color")],
        "color",
        entailed=["02"],
    ),
    "02": _q("is the ball red?", "yes", "verify", "attr", [("select", "ball"), ("verify color", "red")], None, ["01"]),
    "03": _q("what is the object?", "ball", "query", "cat", [("select", "object"), ("query", "name")], "obj"),
    "04": _q("what color is the cube?", "blue", "query", "attr", [("select", "cube"), ("query", "color")], "color"),
    "05": _q(
        "is there a ball or a cube?",
        "yes",
        "logical",
        "obj",
        [("select", "ball"), ("exist", "?"), ("select", "cube"), ("exist", "?"), ("or", "")],
        None,
        ["01"],
    ),
    "06": _q("is it?", "no", "verify", "obj", [("exist", "?")], balanced=False),
    "07": _q(
        "what do the ball and the cube have in common?",
        "color",
        "compare",
        "attr",
        [("select", "ball"), ("select", "cube"), ("common", "")],
        detailed="twoCommon",
    ),
}
CHOICES = {
    "01": {"valid": ["red", "blue", "green"], "plausible": ["red"]},
    "02": {"valid": ["yes", "no"], "plausible": ["yes"]},
    "03": {"valid": ["ball", "cube"], "plausible": ["ball"]},
    "04": {"valid": ["red", "blue"], "plausible": ["blue", "red"]},
    "05": {"valid": ["yes", "no"], "plausible": ["yes", "no"]},
    "06": {"valid": ["yes", "no"], "plausible": ["yes", "no"]},
    "07": {"valid": ["nothing"], "plausible": ["nothing"]},  # "Common": the official code uses color/material/shape
}
PREDICTIONS = {"01": "red", "02": "no", "03": "cube", "04": "red", "05": "yes", "06": "yes", "07": "color"}


def _rounded(t):
    return {k: (round(a, 6), n) for k, (a, n) in t.items()}


def _table(per):
    return _rounded({k: (v["accuracy"], v["questions"]) for k, v in per.items()})


def test_official_gqa_evaluation_hand_computed():
    from lxmert_repro.evaluation.gqa_metric import GQAEvaluator

    r = GQAEvaluator(QUESTIONS, CHOICES).evaluate(PREDICTIONS, consistency=True)
    # balanced: 01 02 03 04 05 07; correct: 01 05 07
    assert r["questions"] == 6
    assert r["accuracy"] == pytest.approx(50.0)
    assert r["open"] == pytest.approx(100 / 3)  # query: 01 right, 03 and 04 wrong
    assert r["binary"] == pytest.approx(200 / 3)  # 02 wrong, 05 and 07 right
    assert r["validity"] == pytest.approx(100.0)  # every prediction valid (07 through the "Common" rule)
    assert r["plausibility"] == pytest.approx(400 / 6)  # 02 "no" and 03 "cube" implausible
    # correct questions with entailed ones: 01 -> [02] wrong (0), 05 -> [01] right (1)
    assert r["consistency"] == pytest.approx(50.0)
    # group color: gold {red 1, blue 1}, predicted {red 2}: (2-1)^2/1 + (0-1)^2/1 = 2, weight 2;
    # group obj: gold {ball 1}, predicted {cube 1}: 1, weight 1 -> (2*2 + 1*1) / 3 / 100
    assert r["distribution"] == pytest.approx(5 / 3 / 100)
    per = r["accuracyPerStructuralType"]
    assert _table(per) == _rounded(
        {"query": (100 / 3, 3), "verify": (0.0, 1), "logical": (100.0, 1), "compare": (100.0, 1)}
    )
    sem = r["accuracyPerSemanticType"]
    assert _table(sem) == _rounded({"attr": (50.0, 4), "cat": (0.0, 1), "obj": (100.0, 1)})
    words = r["accuracyPerLength"]  # 5 words: 01 right, 04 wrong; 4: 02, 03 wrong; 7: 05; 10: 07
    assert _table(words) == _rounded({"4": (0.0, 2), "5": (50.0, 2), "7": (100.0, 1), "10": (100.0, 1)})
    steps = r["accuracyPerSteps"]  # "exist" and "query: name" are no steps: 01 02 04 -> 2, 03 -> 1, 05 07 -> 3
    assert _table(steps) == _rounded({"1": (0.0, 1), "2": (100 / 3, 3), "3": (100.0, 2)})


def test_gqa_evaluation_needs_every_prediction():
    from lxmert_repro.evaluation.gqa_metric import GQAEvaluator

    ev = GQAEvaluator(QUESTIONS)
    without_unbalanced = {k: v for k, v in PREDICTIONS.items() if k != "06"}
    assert "validity" not in ev.evaluate(without_unbalanced)  # no choices file: no validity / plausibility
    with pytest.raises(ValueError, match="1 questions .* no prediction.*'06'"):
        ev.evaluate(without_unbalanced, consistency=True)  # consistency: every question needs one (official)
    with pytest.raises(ValueError, match="no prediction.*'01'"):
        ev.evaluate({k: v for k, v in PREDICTIONS.items() if k != "01"})


def test_evaluate_cli_scores_a_gqa_submission(tmp_path):
    from lxmert_repro.evaluation.gqa_metric import GQAEvaluator, write_gqa_predictions
    from lxmert_repro.training.evaluate import run_evaluate

    q, c, p = tmp_path / "q.json", tmp_path / "c.json", tmp_path / "p.json"
    q.write_text(json.dumps(QUESTIONS))
    c.write_text(json.dumps(CHOICES))
    write_gqa_predictions(p, PREDICTIONS)
    assert json.loads(p.read_text())[0] == {"questionId": "01", "prediction": "red"}
    cfg = compose(
        "evaluate",
        [
            "task=gqa",
            f"predictions={p}",
            f"questions={q}",
            f"choices={c}",
            "consistency=true",
            f"paths.output_dir={tmp_path}",
        ],
    )
    assert run_evaluate(cfg) == GQAEvaluator(QUESTIONS, CHOICES).evaluate(PREDICTIONS, consistency=True)
    p.write_text(json.dumps([{"question_id": 1, "answer": "red"}]))  # VQA's format given to task=gqa
    with pytest.raises(ValueError, match=r"p.json', entry 0: expected \{'questionId'"):
        run_evaluate(cfg)


def test_readers_official_and_lxmert_formats(tmp_path):
    from lxmert_repro.data.formats import read_gqa_questions, read_lxmert_gqa

    off = tmp_path / "testdev_balanced_questions.json"
    off.write_text(json.dumps(QUESTIONS))
    exs = read_gqa_questions(off)
    assert [e.uid for e in exs] == ["01", "02", "03", "04", "05", "07"]  # the unbalanced 06 left out
    assert len(read_gqa_questions(off, balanced_only=False)) == 7
    e = exs[0]
    assert (e.image_id, e.sentence, e.labels, e.main_answer, e.question_type, e.answer_type, e.question_id) == (
        "n1",
        "what color is the ball?",
        {"red": 1.0},
        "red",
        "query",
        "open",
        1,
    )
    assert exs[1].answer_type == "binary"
    lx = tmp_path / "testdev.json"
    lx.write_text(
        json.dumps(
            [
                {"img_id": "n1", "sent": "is it red?", "question_id": "0201", "label": {"yes": 1.0}},
                {"img_id": "n2", "sent": "what is it?", "question_id": "q7"},
            ]
        )
    )  # a submit entry
    a, b = read_lxmert_gqa(lx)
    assert (a.uid, a.question_id, a.labels, a.main_answer, b.uid, b.labels) == (
        "0201",
        201,
        {"yes": 1.0},
        "yes",
        "q7",
        {},
    )
    lx.write_text(json.dumps([{"img_id": "n1", "question_id": "1"}]))
    with pytest.raises(ValueError, match="testdev.json', entry 0: missing field 'sent'"):
        read_lxmert_gqa(lx)


def test_easy_vqa_in_gqa_format():
    from lxmert_repro.data.easy_vqa_tasks import classify, to_gqa

    t = classify("is there not a red shape in the image?")
    assert (t.structural, t.semantic, t.detailed, t.aspect, t.global_group) == (
        "verify",
        "obj",
        "existAttrNot",
        "color",
        None,
    )
    assert t.program == (("select", "shape"), ("filter color", "red"), ("exist", "?"), ("not", "?"))
    assert classify("what is the color of the circle?").program == (("select", "circle"), ("query", "color"))
    assert classify("what shape does the image contain?").detailed == "categoryQuery"
    rows = [
        ["what color is the shape?", "red", 3],
        ["is there a red shape?", "yes", 3],
        ["is there a circle?", "no", 3],
        ["what color is the shape?", "blue", 4],
    ]
    questions, choices = to_gqa(rows, "test")
    assert list(questions) == ["00000000", "00000001", "00000002", "00000003"]
    assert questions["00000000"]["entailed"] == ["00000001"]  # same image, same property (colour)
    assert questions["00000002"]["entailed"] == [] and questions["00000003"]["imageId"] == "test_4"
    assert questions["00000000"]["groups"]["global"] == "color"
    assert choices["00000001"] == {"valid": ["yes", "no"], "plausible": ["yes", "no"]}
    assert len(choices["00000000"]["valid"]) == 8


@pytest.fixture(scope="module")
def gqa_data(tmp_path_factory):
    from lxmert_repro.data.easy_vqa_tasks import easy_vqa_questions, to_gqa
    from lxmert_repro.data.formats import read_gqa_questions

    root = tmp_path_factory.mktemp("gqa")
    files = {}
    for split, n in (("train", 120), ("test", 40)):
        questions, choices = to_gqa([r for r in easy_vqa_questions(split) if int(r[2]) < n], split)
        files[split] = root / f"{split}_balanced_questions.json"
        files[split].write_text(json.dumps(questions))
        (root / f"{split}_choices.json").write_text(json.dumps(choices))
    paths = prepare_task(root, {s: [partial(read_gqa_questions, path=str(p))] for s, p in files.items()})
    paths.update(questions=str(files["test"]), choices=str(root / "test_choices.json"))
    return paths


def test_gqa_finetune_loss_falls_beats_majority_writes_submission(gqa_data, tmp_path):
    import datasets

    from lxmert_repro.evaluation.gqa_metric import GQAEvaluator, read_gqa_predictions
    from lxmert_repro.training.finetune import train_task
    from lxmert_repro.training.tracking import read_metrics

    d, out = gqa_data, tmp_path / "ft"
    cfg = compose(
        "finetune",
        TINY_TRAINER
        + [
            "task=gqa",
            f"data.features={d['features']}",
            f"data.tokenizer_dir={d['tokenizer_dir']}",
            f"data.gqa.train={d['train']}",
            f"data.gqa.val={d['test']}",
            f"data.gqa.test={d['test']}",
            f"data.gqa.answers={d['answers']}",
            f"data.gqa.val_questions={d['questions']}",
            f"data.gqa.val_choices={d['choices']}",
            f"data.gqa.test_questions={d['questions']}",
            f"data.gqa.test_choices={d['choices']}",
            "trainer.batch_size=16",
            "trainer.max_epochs=6",
            "optim.lr=1e-3",
            f"paths.output_dir={out}",
        ],
    )
    assert cfg.task_name == "finetune_gqa"
    metrics = train_task(cfg)
    rows = [r["train/loss"] for r in read_metrics(out) if "train/loss" in r]
    assert sum(rows[-10:]) / 10 < 0.7 * sum(rows[:10]) / 10
    test = datasets.load_from_disk(d["test"])
    majority = Counter(test["main_answer"]).most_common(1)[0][1] / len(test) * 100
    assert metrics["best/val/accuracy"] > majority + 5, (metrics, majority)
    preds = read_gqa_predictions(out / "predictions_test.json")
    assert set(preds) == set(test["uid"]) and all(len(q) == 8 for q in preds)  # string ids, zeros kept
    official = GQAEvaluator.from_files(d["questions"], d["choices"]).evaluate(preds)
    for k in ("accuracy", "binary", "open", "validity", "plausibility", "distribution"):
        assert metrics[f"test/{k}"] == pytest.approx(official[k])
    exact = sum(preds[u] == a for u, a in zip(test["uid"], test["main_answer"])) / len(test) * 100
    assert official["accuracy"] == pytest.approx(exact)
    # evaluation throughput, each epoch's and the test pass's: rows scored / seconds (make compare's eval column)
    evals = [r for r in read_metrics(out) if "val/accuracy" in r and "event" not in r]
    assert evals and all(r["val/samples_per_s"] > 0 for r in evals)
    assert metrics["test/samples_per_s"] > 0


def test_gqa_init_from_pretraining_matches_answers_after_lxmert_conversion(gqa_data, tmp_path, caplog):
    from types import SimpleNamespace

    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.features.store import FeatureStore
    from lxmert_repro.modeling import LxmertForPreTraining
    from lxmert_repro.tasks.gqa import GQATask
    from lxmert_repro.text.tokenizer import load_tokenizer
    from lxmert_repro.training.models import model_config, save_run_model

    d = gqa_data
    tok, store = load_tokenizer(d["tokenizer_dir"]), FeatureStore(d["features"])
    pre_dir = tmp_path / "pre"
    cfg = compose("finetune", TINY_TRAINER + ["task=gqa", f"finetune.init_from={pre_dir}"])
    pre = LxmertForPreTraining(model_config(cfg, vocab_size=len(tok), visual_feat_dim=store.feat_dim, num_qa_labels=3))
    save_run_model(pre, pre_dir, answers=AnswerVocab(["dog", "gray", "2"], "lxmert"), tokenizer_dir=d["tokenizer_dir"])
    task_answers = ["grey", "two", "the dog", "cat"]  # LXMERT's conversion: gray, 2, dog; "cat" has no row
    data = SimpleNamespace(
        answers=AnswerVocab(task_answers, "none"), store=store, tokenizer=tok, tokenizer_dir=Path(d["tokenizer_dir"])
    )
    with caplog.at_level("INFO"):
        model = GQATask().build_model(cfg, data)
    w, src = model.answer_head.classifier.weight, pre.answer_head.classifier.weight
    for j, i in ((0, 1), (1, 2), (2, 0)):
        assert torch.equal(w[j], src[i])
    assert torch.count_nonzero(w[3]) == 0
    assert "3/4 answers matched" in caplog.text
    assert torch.equal(model.answer_head.dense.weight, pre.answer_head.dense.weight)
