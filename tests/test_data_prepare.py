"""lxmert-prepare: configs compose, artifacts written, image ids checked, datasets read the output."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import datasets
import pytest
import torch
from data_helpers import make_store_for
from hydra import compose, initialize_config_dir
from torch.utils.data import DataLoader

from lxmert_repro.cli import CONFIG_DIR
from lxmert_repro.cli.prepare import run_prepare
from lxmert_repro.data.answers import AnswerVocab
from lxmert_repro.data.pretrain_dataset import PretrainCollator, PretrainDataset
from lxmert_repro.data.vqa_dataset import VQACollator, VQADataset
from lxmert_repro.text import load_tokenizer

EASY_IDS = [f"train_{i}" for i in range(12)] + [f"test_{i}" for i in range(4)]


def _cfg(overrides):
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="prepare", overrides=overrides)


@pytest.fixture(scope="module")
def easy(tmp_path_factory):
    root = tmp_path_factory.mktemp("easy")
    make_store_for(root / "store", EASY_IDS)
    cfg = _cfg(
        [f"features={root / 'store'}", f"output_dir={root / 'out'}", "missing_images=drop", "tokenizer.vocab_size=500"]
    )
    return root, cfg, run_prepare(cfg)


def test_easy_vqa_prepare_artifacts(easy):
    root, _, summary = easy
    out = root / "out"
    assert summary["splits"]["train"]["read"] == 38575 and summary["splits"]["test"]["read"] == 9673
    train = datasets.load_from_disk(str(out / "train"))
    assert summary["splits"]["train"]["examples"] == len(train) and summary["splits"]["train"]["images"] == 12
    assert summary["splits"]["train"]["dropped_examples"] == 38575 - len(train)
    assert set(train["image_id"]) == set(EASY_IDS[:12])
    tok = load_tokenizer(out / "tokenizer")
    row = train[0]
    assert row["input_ids"][0] == tok.cls_token_id and row["input_ids"][-1] == tok.sep_token_id
    assert tok.decode(row["input_ids"], skip_special_tokens=True) == row["sentence"]
    answers = AnswerVocab.load(out / "answers.json")
    assert 2 <= len(answers) <= 13 and "yes" in answers
    assert json.loads((out / "prepare_summary.json").read_text())["num_answers"] == len(answers)


def test_prepared_split_feeds_vqa_and_pretrain_datasets(easy):
    root, _, _ = easy
    out = root / "out"
    tok = load_tokenizer(out / "tokenizer")
    answers = AnswerVocab.load(out / "answers.json")
    split = datasets.load_from_disk(str(out / "train"))
    vqa = VQADataset(split.select(range(20)), root / "store", answers)  # a select() view, as `data.limit` does
    batch = VQACollator(len(answers), pad_token_id=tok.pad_token_id)([vqa[i] for i in range(8)])
    assert batch.vqa_targets.shape == (8, len(answers)) and (batch.vqa_targets.max(1).values == 1.0).all()
    assert batch.question_ids.tolist() == split["question_id"][:8]
    pre = PretrainDataset(split, root / "store", tokenizer=tok, answers=answers)
    coll = PretrainCollator(pad_token_id=tok.pad_token_id)
    b = coll([pre[i] for i in range(8)])
    assert b.visual_feats.shape == (8, 5, 8) and b.qa_labels.shape == (8,)
    assert len(pickle.dumps(pre)) < 50000  # workers get the Arrow file reference, not the data
    via_workers = next(iter(DataLoader(pre, batch_size=8, collate_fn=coll, num_workers=2)))
    assert torch.equal(via_workers.input_ids, b.input_ids) and torch.equal(via_workers.visual_feats, b.visual_feats)


def test_missing_image_is_an_error_naming_it(tmp_path):
    make_store_for(tmp_path / "store", EASY_IDS[:3])
    cfg = _cfg([f"features={tmp_path / 'store'}", f"output_dir={tmp_path / 'out'}"])
    with pytest.raises(ValueError, match=r"split 'train'.*not in the feature store.*train_10"):
        run_prepare(cfg)


def _write_vqa_v2(root: Path):
    answers = {0: ["yes"] * 10, 1: ["two"] * 6 + ["2"] * 4, 2: ["red"] * 3 + ["blue"] * 7}
    for sub, base in (("train2014", 0), ("val2014", 100)):
        q, a = [], []
        for k in range(6):
            qid, img = base + k, base + k // 2
            q.append({"image_id": img, "question": f"question {k}?", "question_id": qid})
            hum = answers[k % 3]
            a.append(
                {
                    "question_id": qid,
                    "image_id": img,
                    "question_type": "what",
                    "answer_type": "other",
                    "multiple_choice_answer": hum[0],
                    "answers": [
                        {"answer": x, "answer_confidence": "yes", "answer_id": j + 1} for j, x in enumerate(hum)
                    ],
                }
            )
        (root / f"v2_OpenEnded_mscoco_{sub}_questions.json").write_text(
            json.dumps({"data_subtype": sub, "questions": q})
        )
        (root / f"v2_mscoco_{sub}_annotations.json").write_text(json.dumps({"annotations": a}))
    (root / "v2_OpenEnded_mscoco_test2015_questions.json").write_text(
        json.dumps(
            {"data_subtype": "test2015", "questions": [{"image_id": 7, "question": "Is it?", "question_id": 9000}]}
        )
    )
    return (
        [f"COCO_train2014_{i:012d}" for i in range(3)]
        + [f"COCO_val2014_{100 + i:012d}" for i in range(3)]
        + ["COCO_test2015_000000000007"]
    )


def test_vqa_v2_prepare(tmp_path):
    ids = _write_vqa_v2(tmp_path)
    make_store_for(tmp_path / "store", ids)
    cfg = _cfg(
        [
            "data=vqa_v2",
            f"data.root={tmp_path}",
            "data.answers.min_count=4",
            f"features={tmp_path / 'store'}",
            f"output_dir={tmp_path / 'out'}",
            "tokenizer.vocab_size=200",
        ]
    )
    summary = run_prepare(cfg)
    # main answers over train+val: yes x4, two x4 (-> "2"), red x4
    assert AnswerVocab.load(tmp_path / "out" / "answers.json").answers == ["2", "red", "yes"]
    assert summary["splits"]["test"]["labelled"] == 0 and summary["splits"]["val"]["examples"] == 6
    val = datasets.load_from_disk(str(tmp_path / "out" / "val"))
    assert dict(zip(val[2]["answers"], val[2]["answer_scores"])) == pytest.approx({"red": 0.9, "blue": 1.0})


def test_empty_questions_are_counted_and_warned_or_dropped(tmp_path, caplog):
    ids = _write_vqa_v2(tmp_path)
    qfile = tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json"
    data = json.loads(qfile.read_text())
    data["questions"][4]["question"] = "  "
    qfile.write_text(json.dumps(data))
    make_store_for(tmp_path / "store", ids)
    base = [
        "data=vqa_v2",
        f"data.root={tmp_path}",
        "data.answers.min_count=4",
        f"features={tmp_path / 'store'}",
        "tokenizer.vocab_size=200",
    ]
    with caplog.at_level("WARNING"):
        summary = run_prepare(_cfg(base + [f"output_dir={tmp_path / 'out'}"]))
    assert summary["splits"]["train"]["empty_sentences"] == 1 and summary["splits"]["train"]["examples"] == 6
    assert summary["splits"]["val"]["empty_sentences"] == 0
    assert any(
        "split 'train': 1 of 6 examples have an empty sentence (e.g. question_id 4): kept" in r.getMessage()
        for r in caplog.records
    )
    summary = run_prepare(_cfg(base + [f"output_dir={tmp_path / 'out2'}", "empty_sentences=drop"]))
    assert summary["splits"]["train"]["empty_sentences"] == 1 and summary["splits"]["train"]["examples"] == 5
    assert 4 not in datasets.load_from_disk(str(tmp_path / "out2" / "train"))["question_id"]
    with pytest.raises(
        ValueError, match=r"split 'train': 1 of 6 examples have an empty sentence \(e.g. question_id 4\)"
    ):
        run_prepare(_cfg(base + [f"output_dir={tmp_path / 'out3'}", "empty_sentences=error"]))


def test_lxmert_pretrain_prepare_cli(tmp_path):
    rows = [
        {
            "img_id": f"COCO_train2014_{i:012d}",
            "labelf": {"vqa": [{"Two": 1.0}, {"yes": 1.0, "no": 0.3}]},
            "sentf": {"mscoco": [f"a caption of image {i}"], "vqa": ["how many?", "is it?"]},
        }
        for i in range(4)
    ]
    for name, part in (
        ("mscoco_train", rows[:2]),
        ("mscoco_nominival", rows[2:3]),
        ("vgnococo", rows[3:]),
        ("mscoco_minival", rows[:1]),
    ):
        (tmp_path / f"{name}.json").write_text(json.dumps(part))
    make_store_for(tmp_path / "store", [r["img_id"] for r in rows])
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    cmd = [
        sys.executable,
        "-m",
        "lxmert_repro.cli.prepare",
        "data=lxmert_pretrain",
        f"data.root={tmp_path}",
        f"features={tmp_path / 'store'}",
        f"output_dir={tmp_path / 'out'}",
        "tokenizer.vocab_size=100",
        f"paths.log_dir={tmp_path / 'runs'}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert summary["splits"]["train"]["examples"] == 12 and summary["splits"]["val"]["examples"] == 3
    assert summary["splits"]["train"]["sources"] == {"mscoco": 4, "vqa": 8}
    table = AnswerVocab.load(tmp_path / "out" / "answers.json")
    assert table.answers == ["2", "no", "yes"] and table.normalizer == "lxmert"


@pytest.mark.parametrize("name", ["easy_vqa", "easy_vqa_pretrain", "vqa_v2", "lxmert_vqa", "lxmert_pretrain"])
def test_every_data_config_composes(name):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = _cfg([f"data={name}", "features=null"])
    data = OmegaConf.to_container(cfg.data, resolve=True)
    assert data["name"] == name and data["kind"] in ("vqa", "pretrain")
    for split, readers in cfg.data.splits.items():
        for r in readers:
            assert callable(instantiate(r))
    assert set(cfg.data.answers.from_splits) <= set(cfg.data.splits)


def test_lxmert_vqa_json_with_given_answer_list(tmp_path):
    row = lambda qid, img, lab: {
        "answer_type": "other",
        "img_id": img,
        "label": lab,
        "question_id": qid,  # noqa: E731
        "question_type": "what",
        "sent": f"question {qid}?",
    }
    (tmp_path / "train.json").write_text(json.dumps([row(1, "A", {"net": 1}), row(2, "B", {"red": 0.6, "dog": 1})]))
    (tmp_path / "nominival.json").write_text(json.dumps([row(3, "A", {"2": 1})]))
    (tmp_path / "minival.json").write_text(json.dumps([row(4, "B", {"net": 0.3})]))
    (tmp_path / "test.json").write_text(json.dumps([{"img_id": "C", "question_id": 5, "sent": "is it?"}]))
    (tmp_path / "trainval_label2ans.json").write_text(json.dumps(["net", "2", "red", "yes"]))
    make_store_for(tmp_path / "store", ["A", "B", "C"])
    summary = run_prepare(
        _cfg(
            [
                "data=lxmert_vqa",
                f"data.root={tmp_path}",
                f"features={tmp_path / 'store'}",
                f"output_dir={tmp_path / 'out'}",
                "tokenizer.vocab_size=100",
            ]
        )
    )
    assert AnswerVocab.load(tmp_path / "out" / "answers.json").answers == ["net", "2", "red", "yes"]
    assert summary["splits"]["train"]["examples"] == 3 and summary["splits"]["test"]["labelled"] == 0
    assert summary["splits"]["train"]["labelled_with_known_answer"] == 3


def test_prepare_under_two_processes(tmp_path):
    """torchrun with 2 processes: rank 0 prepares first, rank 1 reads the finished summary."""
    make_store_for(tmp_path / "store", EASY_IDS)
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [
        str(torchrun),
        "--nproc_per_node",
        "2",
        "-m",
        "lxmert_repro.cli.prepare",
        f"features={tmp_path / 'store'}",
        f"output_dir={tmp_path / 'out'}",
        "missing_images=drop",
        "tokenizer.vocab_size=300",
        f"paths.log_dir={tmp_path / 'runs'}",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('"num_answers"') == 2  # both ranks report the same summary
    assert "(by the main process of 2)" in r.stdout + r.stderr  # one writer, not two racing on the same files
    summary = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert summary["splits"]["train"]["images"] == 12 and (tmp_path / "out" / "train" / "dataset_info.json").is_file()
