"""Helpers shared by the data tests (no tests here): a small real feature store and prepared records."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from lxmert_repro.features.store import ClassDist, FeatureStoreWriter

CLS, SEP, PAD, MASK, VOCAB = 2, 3, 0, 4, 1000


def make_store(
    path: Path,
    num_images: int = 6,
    feat_dim: int = 16,
    boxes=(10, 7, 10, 4, 9, 10),
    feat_dtype: str = "float16",
    seed: int = 0,
    class_dist: ClassDist | None = None,
    num_classes: int = 11,
) -> dict[str, dict]:
    """A store of ``num_images`` images "img{i}" with varying box counts; returns what was written. With
    ``class_dist``, each box also gets a class distribution over ``num_classes`` (its top k, or all of them)."""
    rng = np.random.default_rng(seed)
    written = {}
    with FeatureStoreWriter(path, feat_dim=feat_dim, feat_dtype=feat_dtype, class_dist=class_dist) as w:
        for i in range(num_images):
            n = boxes[i % len(boxes)]
            h, w_ = 100 + 10 * i, 200 + 5 * i
            x1 = rng.uniform(0, w_ / 2, n)
            y1 = rng.uniform(0, h / 2, n)
            bx = np.stack([x1, y1, x1 + rng.uniform(1, w_ / 2, n), y1 + rng.uniform(1, h / 2, n)], 1).astype(np.float32)
            feats = (rng.standard_normal((n, feat_dim)) + 10 * i).astype(np.float32)  # image i's rows sit near 10*i
            rec = dict(
                img_id=f"img{i}",
                img_h=h,
                img_w=w_,
                boxes=bx,
                features=feats,
                obj_ids=rng.integers(0, 1600, n),
                obj_conf=rng.uniform(0, 1, n).astype(np.float32),
                attr_ids=rng.integers(0, 400, n),
                attr_conf=rng.uniform(0, 1, n).astype(np.float32),
            )
            if class_dist is not None:
                probs = rng.dirichlet(np.ones(num_classes), n).astype(np.float32)  # (n, C)
                if class_dist.full:
                    rec["class_probs"] = probs
                else:
                    order = np.argsort(-probs, axis=1)[:, : class_dist.k]
                    rec["class_ids"], rec["class_probs"] = order, np.take_along_axis(probs, order, 1)
            w.add(**rec)
            written[rec["img_id"]] = rec
    return written


def make_records(num_images: int = 6, per_image: int = 5, seed: int = 0) -> list[dict]:
    """Sentences whose word ids encode their image (id 100 + image index), some with QA labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(num_images):
        for k in range(per_image):
            T = int(rng.integers(3, 19))
            labels = {"yes": 1.0, "no": 0.3} if k % 2 == 0 else {}
            rows.append(
                {
                    "image_id": f"img{i}",
                    "sentence": f"s{i}-{k}",
                    "source": "vqa" if labels else "mscoco",
                    "question_id": i * 100 + k,
                    "answers": list(labels),
                    "answer_scores": list(labels.values()),
                    "main_answer": "yes" if labels else "",
                    "question_type": "",
                    "answer_type": "",
                    "input_ids": [CLS] + [100 + i] * T + [SEP],
                }
            )
    return rows


def make_store_for(path: Path, image_ids, feat_dim: int = 8, num_boxes: int = 5, seed: int = 0) -> None:
    """A store holding exactly ``image_ids`` (random regions), for prepare/integration tests."""
    rng = np.random.default_rng(seed)
    with FeatureStoreWriter(path, feat_dim=feat_dim, feat_dtype="float16") as w:
        for img_id in image_ids:
            bx = np.array([[1, 2, 30, 40]] * num_boxes, np.float32)
            w.add(
                img_id,
                64,
                64,
                bx,
                rng.standard_normal((num_boxes, feat_dim)),
                rng.integers(0, 10, num_boxes),
                rng.uniform(size=num_boxes),
                rng.integers(0, 5, num_boxes),
                rng.uniform(size=num_boxes),
            )
