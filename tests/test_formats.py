"""Each annotation format parsed from small files written in the real format."""

import json

import pytest

from lxmert_repro.data.formats import (
    Example,
    read_coco_captions,
    read_easy_vqa,
    read_lxmert_pretrain,
    read_lxmert_vqa,
    read_vqa_v2,
)
from lxmert_repro.data.formats.vqa_v2 import vqa_answer_vocab_from_files


def _vqa_files(tmp_path):
    q = {
        "info": {},
        "task_type": "Open-Ended",
        "data_type": "mscoco",
        "data_subtype": "train2014",
        "license": {},
        "questions": [
            {"image_id": 458752, "question": "What is this photo taken looking through?", "question_id": 458752000},
            {"image_id": 458752, "question": "How many people?", "question_id": 458752001},
        ],
    }
    answers0 = ["net"] * 7 + ["netting"] * 2 + ["Net"]
    answers1 = ["two"] * 3 + ["2"] * 2 + ["3"] * 5
    a = {
        "annotations": [
            {
                "question_type": "what is this",
                "multiple_choice_answer": "net",
                "image_id": 458752,
                "answer_type": "other",
                "question_id": 458752000,
                "answers": [
                    {"answer": x, "answer_confidence": "yes", "answer_id": i + 1} for i, x in enumerate(answers0)
                ],
            },
            {
                "question_type": "how many",
                "multiple_choice_answer": "3",
                "image_id": 458752,
                "answer_type": "number",
                "question_id": 458752001,
                "answers": [
                    {"answer": x, "answer_confidence": "maybe", "answer_id": i + 1} for i, x in enumerate(answers1)
                ],
            },
        ]
    }
    (tmp_path / "q.json").write_text(json.dumps(q))
    (tmp_path / "a.json").write_text(json.dumps(a))
    return tmp_path / "q.json", tmp_path / "a.json"


def test_vqa_v2_official(tmp_path):
    qp, ap = _vqa_files(tmp_path)
    ex = read_vqa_v2(qp, ap)
    assert ex[0].image_id == "COCO_train2014_000000458752" and ex[0].question_id == 458752000
    assert ex[0].labels == {"net": 1.0, "netting": 0.6}  # "Net" normalises to "net": 8 -> 1.0
    assert ex[1].labels == {"2": 1.0, "3": 1.0}  # two x3 + 2 x2 -> 5 -> 1.0
    assert (ex[1].main_answer, ex[1].question_type, ex[1].answer_type) == ("3", "how many", "number")
    test_only = read_vqa_v2(qp, None, image_id_format="{image_id}")
    assert test_only[1].labels == {} and test_only[1].image_id == "458752"
    assert vqa_answer_vocab_from_files([str(ap)], min_count=1).answers == ["3", "net"]


def test_vqa_v2_errors_name_file_and_field(tmp_path):
    (tmp_path / "q.json").write_text(json.dumps({"questions": [{"image_id": 1, "question_id": 2}]}))
    with pytest.raises(ValueError, match=r"q\.json.*questions\[0\].*'question'"):
        read_vqa_v2(tmp_path / "q.json")
    with pytest.raises(FileNotFoundError, match="nothere.json"):
        read_vqa_v2(tmp_path / "nothere.json")


def test_lxmert_vqa_json(tmp_path):
    rows = [
        {
            "answer_type": "other",
            "img_id": "COCO_train2014_000000458752",
            "label": {"net": 1, "netting": 0.3},
            "question_id": 458752000,
            "question_type": "what is this",
            "sent": "What is this photo taken looking through?",
        },
        {"img_id": "COCO_test2015_000000000001", "question_id": 1000, "sent": "Is it?"},
    ]
    (tmp_path / "train.json").write_text(json.dumps(rows))
    ex = read_lxmert_vqa(tmp_path / "train.json")
    assert ex[0] == Example(
        "COCO_train2014_000000458752",
        "What is this photo taken looking through?",
        "vqa",
        458752000,
        {"net": 1.0, "netting": 0.3},
        "net",
        "what is this",
        "other",
    )
    assert ex[1].labels == {} and ex[1].main_answer == ""


def test_lxmert_pretrain_json(tmp_path):
    rows = [
        {
            "img_id": "COCO_train2014_000000318556",
            "labelf": {"vqa": [{"no": 1}, {"Two": 0.6, "2": 0.3}]},
            "sentf": {
                "mscoco": ["A very clean bathroom.", "A white sink."],
                "vqa": ["Are there people?", "How many sinks?"],
            },
        }
    ]
    (tmp_path / "mscoco_train.json").write_text(json.dumps(rows))
    ex = read_lxmert_pretrain(tmp_path / "mscoco_train.json")
    assert [(e.source, e.sentence, e.labels) for e in ex] == [
        ("mscoco", "A very clean bathroom.", {}),
        ("mscoco", "A white sink.", {}),
        ("vqa", "Are there people?", {"no": 1.0}),
        ("vqa", "How many sinks?", {"2": 0.6}),
    ]
    assert all(e.image_id == "COCO_train2014_000000318556" for e in ex)
    assert [e.source for e in read_lxmert_pretrain(tmp_path / "mscoco_train.json", sources=["vqa"])] == ["vqa", "vqa"]
    rows[0]["labelf"]["vqa"].pop()
    (tmp_path / "bad.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match=r"bad\.json.*1 labels for 2 sentences"):
        read_lxmert_pretrain(tmp_path / "bad.json")


def test_coco_captions(tmp_path):
    obj = {
        "info": {},
        "licenses": [],
        "images": [{"id": 318556, "file_name": "COCO_train2014_000000318556.jpg", "height": 640, "width": 480}],
        "annotations": [
            {"image_id": 318556, "id": 48, "caption": "A very clean and well decorated empty bathroom\n"},
            {"image_id": 318556, "id": 67, "caption": "A blue and white bathroom."},
        ],
    }
    (tmp_path / "captions_train2014.json").write_text(json.dumps(obj))
    ex = read_coco_captions(tmp_path / "captions_train2014.json")
    assert [(e.image_id, e.sentence, e.source, e.question_id) for e in ex] == [
        ("COCO_train2014_000000318556", "A very clean and well decorated empty bathroom", "mscoco", -1),
        ("COCO_train2014_000000318556", "A blue and white bathroom.", "mscoco", -1),
    ]
    assert (
        read_coco_captions(tmp_path / "captions_train2014.json", image_id_format="{image_id}")[0].image_id == "318556"
    )


def test_easy_vqa_from_installed_package():
    train, test = read_easy_vqa("train"), read_easy_vqa("test")
    assert (len(train), len(test)) == (38575, 9673)
    assert train[0].image_id == "0" and train[0].sentence == "what is the blue shape?"
    assert train[0].labels == {"rectangle": 1.0}
    answers = {e.main_answer for e in train}
    assert len(answers) == 13
    yes_no = sum(e.answer_type == "yes/no" for e in train) / len(train)
    assert 0.70 < yes_no < 0.78  # ~74% yes/no (docs/faithful.md §9)
    assert len({e.image_id for e in train}) == 4000
    assert read_easy_vqa("test", image_id_format="{split}_{image_id}")[0].image_id.startswith("test_")


def test_example_record_roundtrip():
    e = Example("img", "q?", "vqa", 5, {"a": 1.0, "b": 0.3}, "a", "what", "other")
    assert Example.from_record(e.to_record()) == e
