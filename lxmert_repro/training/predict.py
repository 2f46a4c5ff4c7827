"""``lxmert-predict``: image + question(s) → detector regions → tokenizer → fine-tuned LXMERT → top
answers with scores; optionally a picture of the answer's cross-attention over the boxes.

Scores are sigmoid probabilities (the VQA head is trained with per-answer BCE). The picture uses the
last cross-modality layer's language→vision attention of the [CLS] token (the pooled position),
averaged over heads.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lxmert_repro.features.images import ImageReader
from lxmert_repro.features.store import RegionFeatures

log = logging.getLogger(__name__)


def detect_regions(
    detector_dir: str | os.PathLike, image_path: str | os.PathLike, reader: ImageReader | None = None
) -> RegionFeatures:
    """Run a detector checkpoint (lxmert-train-detector / converted) on one image: the regions a store would hold."""
    from lxmert_repro.features.detectors import load_detector

    detector, _ = load_detector(detector_dir)
    p = Path(image_path)
    if not p.is_file():
        raise FileNotFoundError(f"image={p}: no such file")
    img = (reader or ImageReader()).tensor(p)
    det = detector.extract([img])[0]
    return RegionFeatures(
        Path(image_path).stem,
        int(img.shape[1]),
        int(img.shape[2]),
        det.boxes.cpu().numpy().astype(np.float32),
        det.features.cpu().float().numpy(),
        det.obj_ids.cpu().numpy(),
        det.obj_conf.cpu().float().numpy(),
        det.attr_ids.cpu().numpy(),
        det.attr_conf.cpu().float().numpy(),
    )


def regions_from_store(store_path: str | os.PathLike, image_id: str) -> RegionFeatures:
    """Regions already extracted into a feature store (no detector run)."""
    from lxmert_repro.features.store import FeatureStore

    store = FeatureStore(str(store_path))
    if image_id not in store:
        raise KeyError(f"image_id={image_id!r} is not in the feature store {store_path}")
    return store[image_id]


@torch.no_grad()
def answer_questions(
    model_dir: str | os.PathLike,
    regions: RegionFeatures,
    questions: Sequence[str],
    top_k: int = 5,
    device: str = "cpu",
    with_attention: bool = False,
) -> list[dict[str, Any]]:
    """Top-k answers per question: ``[{question, answers: [{answer, score}], box_attention?}]``."""
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.data.regions import normalize_boxes
    from lxmert_repro.data.vqa_dataset import VQACollator, VQAItem
    from lxmert_repro.text.tokenizer import load_tokenizer
    from lxmert_repro.training.models import ANSWERS_FILE, TOKENIZER_DIR, load_vqa_model

    model_dir = Path(model_dir)
    model = load_vqa_model(model_dir).to(device).eval()
    answers = AnswerVocab.load(model_dir / ANSWERS_FILE)
    tok = load_tokenizer(str(model_dir / TOKENIZER_DIR))
    if regions.features.shape[1] != model.config.visual_feat_dim:
        raise ValueError(
            f"the detector gives {regions.features.shape[1]}-d features, the model {model_dir} expects "
            f"{model.config.visual_feat_dim}-d: use the detector its training features came from"
        )
    boxes = normalize_boxes(regions.boxes, regions.img_h, regions.img_w)
    features = np.asarray(regions.features, np.float32)  # a store may hold float16
    items = [
        VQAItem(
            np.asarray(tok(q, truncation=True, max_length=int(tok.model_max_length or 20))["input_ids"], np.int64),
            i,
            regions.img_id,
            boxes,
            features,
            np.zeros(0, np.int64),
            np.zeros(0, np.float32),
        )
        for i, q in enumerate(questions)
    ]
    batch = VQACollator(len(answers), pad_token_id=tok.pad_token_id)(items).to(device)
    out = model(**batch.model_inputs(), output_attentions=with_attention)
    probs = torch.sigmoid(out.logits.float())  # (Q, A)
    k = min(top_k, probs.shape[1])
    top = probs.topk(k, dim=-1)
    results = []
    for i, q in enumerate(questions):
        r: dict[str, Any] = {
            "question": q,
            "answers": [
                {"answer": answers[int(j)], "score": round(float(s), 4)} for s, j in zip(top.values[i], top.indices[i])
            ],
        }
        if with_attention and out.cross_attentions:
            att = out.cross_attentions[-1][i].float().mean(0)[0]  # (N,) [CLS] → boxes, last cross layer
            r["box_attention"] = [round(float(a), 4) for a in att[: regions.boxes.shape[0]]]
        results.append(r)
    return results


def save_attention_picture(
    image_path: str | os.PathLike,
    regions: RegionFeatures,
    result: dict[str, Any],
    out_path: str | os.PathLike,
    top_boxes: int = 5,
    reader: ImageReader | None = None,
) -> Path:
    """The image with its most-attended boxes drawn, line width and opacity ∝ attention."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches as patches
    import matplotlib.pyplot as plt

    from lxmert_repro.io_utils import atomic_path

    att = np.asarray(result["box_attention"], np.float64)
    order = np.argsort(-att)[:top_boxes]
    fig, ax = plt.subplots(figsize=(6, 6 * regions.img_h / max(regions.img_w, 1)))
    ax.imshow((reader or ImageReader()).array(image_path))  # the upright pixels the boxes refer to
    peak = float(att.max()) if att.size else 1.0
    for rank, j in enumerate(order):
        x1, y1, x2, y2 = regions.boxes[j]
        w = float(att[j] / peak) if peak > 0 else 0.0
        ax.add_patch(
            patches.Rectangle(
                (x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1 + 3 * w, edgecolor=(1.0, 0.1, 0.1, 0.3 + 0.7 * w)
            )
        )
        ax.text(x1, y1, f"{att[j]:.2f}", color="white", fontsize=8, bbox=dict(facecolor="red", alpha=0.6, pad=1))
    best = result["answers"][0]
    ax.set_title(f"{result['question']} → {best['answer']} ({best['score']:.2f})", fontsize=9)
    ax.axis("off")
    out = Path(out_path)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=out.suffix.lstrip(".") or "png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out
