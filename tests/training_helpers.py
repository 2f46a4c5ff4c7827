"""Helpers for the training tests (no tests here): a small REAL easy-VQA run directory built with the
project's public APIs — questions from the easy-vqa package, a trained WordPiece tokenizer, Arrow
splits, an answer vocabulary and a feature store — and composed Hydra configs pointing at it.

Region features here are deliberately simple and cheap (no detector in unit tests): per image two
boxes, the whole image and the shape's pixel bounding box, each described by its 4x4 RGB average
pooling (48-d). Real pixels, so the model has to learn colour and shape from them.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from lxmert_repro.cli import CONFIG_DIR as PACKAGE_CONFIG_DIR

CONFIG_DIR = str(PACKAGE_CONFIG_DIR)
FEAT_DIM = 48


def _pool(img: np.ndarray, cells: int = 4) -> np.ndarray:
    """(h, w, 3) uint8 → (cells*cells*3,) float32 in [0, 1], by average pooling on a cells x cells grid."""
    h, w, _ = img.shape
    ys = np.linspace(0, h, cells + 1).astype(int)
    xs = np.linspace(0, w, cells + 1).astype(int)
    out = np.zeros((cells, cells, 3), np.float32)
    for i in range(cells):
        for j in range(cells):
            patch = img[ys[i] : max(ys[i + 1], ys[i] + 1), xs[j] : max(xs[j + 1], xs[j] + 1)]
            out[i, j] = patch.reshape(-1, 3).mean(0) / 255.0
    return out.reshape(-1)


def region_features(path: Path) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Boxes (2, 4) pixel x1y1x2y2 and features (2, 48) of one easy-VQA image."""
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB"))
    h, w, _ = img.shape
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = Counter(map(tuple, border)).most_common(1)[0][0]
    diff = np.abs(img.astype(np.int32) - np.array(bg, np.int32)).sum(-1) > 60
    ys, xs = np.nonzero(diff)
    if len(xs) == 0:
        x1, y1, x2, y2 = 0, 0, w, h
    else:
        x1, y1, x2, y2 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    boxes = np.array([[0, 0, w, h], [x1, y1, x2, y2]], np.float32)
    feats = np.stack([_pool(img), _pool(img[y1:y2, x1:x2])]).astype(np.float32)
    return boxes, feats, h, w


def build_easy_vqa_data(root: Path, n_train_images: int = 200, n_test_images: int = 60) -> dict[str, str]:
    """Write features, tokenizer, Arrow splits and answer vocab for the first images of each split."""
    import datasets

    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir, read_easy_vqa
    from lxmert_repro.features.store import FeatureStoreWriter
    from lxmert_repro.text.tokenizer import train_wordpiece

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    splits: dict[str, list[Any]] = {}
    for split, n in (("train", n_train_images), ("test", n_test_images)):
        exs = read_easy_vqa(split, image_id_format="{split}_{image_id}")
        keep = {f"{split}_{i}" for i in range(n)}
        splits[split] = [e for e in exs if e.image_id in keep]
    with FeatureStoreWriter(root / "features", feat_dim=FEAT_DIM, feat_dtype="float32") as w:
        for split, n in (("train", n_train_images), ("test", n_test_images)):
            img_dir = easy_vqa_image_dir(split)
            for i in range(n):
                boxes, feats, h, w_ = region_features(img_dir / f"{i}.png")
                w.add(
                    img_id=f"{split}_{i}",
                    img_h=h,
                    img_w=w_,
                    boxes=boxes,
                    features=feats,
                    obj_ids=np.zeros(2, np.int64),
                    obj_conf=np.ones(2, np.float32),
                    attr_ids=np.zeros(2, np.int64),
                    attr_conf=np.ones(2, np.float32),
                )
    tok = train_wordpiece([e.sentence for e in splits["train"]], root / "tokenizer", vocab_size=200)
    answers = AnswerVocab(sorted({e.main_answer for e in splits["train"]}))
    answers.save(root / "answers.json")
    paths = {
        "features": str(root / "features"),
        "tokenizer_dir": str(root / "tokenizer"),
        "answers": str(root / "answers.json"),
    }
    for split, exs in splits.items():
        recs = []
        for e in exs:
            r = e.to_record()
            r["input_ids"] = tok(e.sentence, truncation=True, max_length=20)["input_ids"]
            recs.append(r)
        datasets.Dataset.from_list(recs).save_to_disk(str(root / f"vqa_{split}"))
        paths[split] = str(root / f"vqa_{split}")
    return paths


def data_overrides(paths: dict[str, str], task: str) -> list[str]:
    """Hydra overrides pointing a pretrain / finetune config at ``build_easy_vqa_data`` output."""
    common = [f"data.features={paths['features']}", f"data.tokenizer_dir={paths['tokenizer_dir']}"]
    if task == "pretrain":
        return common + [
            f"data.pretrain.train={paths['train']}",
            f"data.pretrain.val={paths['test']}",
            f"data.pretrain.answers={paths['answers']}",
        ]
    return common + [
        f"data.vqa.train={paths['train']}",
        f"data.vqa.val={paths['test']}",
        f"data.vqa.test={paths['test']}",
        f"data.vqa.answers={paths['answers']}",
    ]


TINY_TRAINER = [
    "model=lxmert_tiny",
    "trainer.cpu=true",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "logger=jsonl",
]


def compose(config_name: str, overrides: list[str]) -> Any:
    """The composed config of an entry point (as the Hydra app would see it, minus the hydra node)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)
