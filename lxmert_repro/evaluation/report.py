"""The end-to-end run's report: a markdown summary, loss curves and attention pictures (PNG)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lxmert_repro.io_utils import atomic_path, atomic_write_json, atomic_write_text
from lxmert_repro.training.tracking import read_metrics


def plot_curves(run_dir: str | os.PathLike, out_png: str | os.PathLike, title: str) -> Path | None:
    """Every logged ``train/*`` loss against the optimizer step; None when the run logged none."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(run_dir)
    series: dict[str, tuple[list[int], list[float]]] = {}
    for rec in records:
        for k, v in rec.items():
            if k.startswith("train/") and "loss" in k and isinstance(v, (int, float)):
                xs, ys = series.setdefault(k, ([], []))
                xs.append(int(rec["step"]))
                ys.append(float(v))
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(7, 4))
    for k, (xs, ys) in sorted(series.items()):
        ax.plot(xs, ys, label=k.removeprefix("train/"))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.legend(fontsize=7)
    out = Path(out_png)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def attention_examples(
    model_dir: str | os.PathLike,
    store: str | os.PathLike,
    examples: Sequence[dict[str, Any]],
    out_dir: str | os.PathLike,
) -> list[dict[str, Any]]:
    """For each ``{image_id, image_path, question}``: predicted answers and a box-attention picture."""
    from lxmert_repro.training.predict import answer_questions, regions_from_store, save_attention_picture

    rows = []
    for i, ex in enumerate(examples):
        regions = regions_from_store(store, ex["image_id"])
        result = answer_questions(model_dir, regions, [ex["question"]], top_k=3, with_attention=True)[0]
        png = save_attention_picture(ex["image_path"], regions, result, Path(out_dir) / f"example_{i}.png")
        rows.append(
            {
                **ex,
                "prediction": result["answers"][0]["answer"],
                "score": result["answers"][0]["score"],
                "picture": png.name,
            }
        )
    return rows


GQA_FIGURES = ("accuracy", "binary", "open", "validity", "plausibility", "consistency", "distribution")


def gqa_section(metrics: dict[str, Any]) -> list[str]:
    """The official GQA figures of the best epoch's model on the test split (``test/<name>``)."""
    lines = [
        "## GQA (easy-VQA in GQA's format)",
        "",
        "The official GQA evaluation's figures on the test split (balanced questions; distribution: lower is better).",
        "",
        "| figure | value |",
        "|---|---|",
    ]
    lines += [
        f"| {k} | {metrics[f'test/{k}']:.2f}{'' if k == 'distribution' else ' %'} |"
        for k in GQA_FIGURES
        if f"test/{k}" in metrics
    ]
    return lines + [""]


def nlvr2_section(metrics: dict[str, Any], text_only: dict[str, Any] | None) -> list[str]:
    """NLVR2's official accuracy and consistency on the test split, beside the text-only baseline (images zeroed)."""
    lines = [
        "## NLVR2 (easy-VQA image pairs)",
        "",
        "The official NLVR2 metrics on the test split; the text-only "
        "model is the same architecture trained with image features and boxes zeroed.",
        "",
        "| model | accuracy (%) | consistency (%) |",
        "|---|---|---|",
    ]
    rows = [("LXMERT", metrics)] + ([("text only", text_only)] if text_only else [])
    lines += [
        f"| {name} | {m.get('test/accuracy', float('nan')):.2f} | {m.get('test/consistency', float('nan')):.2f} |"
        for name, m in rows
    ]
    if text_only and "test/accuracy" in metrics and "test/accuracy" in text_only:
        lines += [
            "",
            f"Gap to the text-only model: {metrics['test/accuracy'] - text_only['test/accuracy']:.2f} points.",
        ]
    return lines + [""]


def write_summary(
    out_dir: str | os.PathLike,
    stages: Sequence[dict[str, Any]],
    metrics: dict[str, Any],
    curves: Sequence[Path],
    examples: Sequence[dict[str, Any]],
    sections: Sequence[str] = (),
) -> Path:
    """``report.md``: VQA accuracy (overall, per answer type; when ``metrics`` has it), the other tasks'
    ``sections`` (markdown lines), per-stage time, throughput, pictures."""
    lines = ["# easy-VQA end-to-end run", ""]
    if "test/accuracy" in metrics:
        lines += [
            "## Test accuracy",
            "",
            "VQA accuracy of the best epoch's model on the test split (one answer per question: exact match).",
            "",
        ]
        lines += ["| answer type | accuracy (%) |", "|---|---|"]
        lines.append(f"| **all** | **{metrics['test/accuracy']:.2f}** |")
        lines += [
            f"| {k.removeprefix('test/accuracy_').replace('_', '/')} | {v:.2f} |"
            for k, v in sorted(metrics.items())
            if k.startswith("test/accuracy_")
        ]
        lines += [""]
    lines += list(sections)
    lines += ["## Stages", "", "| stage | seconds | status |", "|---|---|---|"]
    lines += [f"| {s['name']} | {s['seconds']:.1f} | {s['status']} |" for s in stages]
    lines += [f"| **total** | {sum(s['seconds'] for s in stages):.1f} | |", ""]
    thr = {k: v for k, v in metrics.items() if "samples_per_s" in k}
    if thr:
        lines += ["## Throughput", ""] + [f"- {k}: {v}" for k, v in sorted(thr.items())] + [""]
    lines += ["## Loss curves", ""] + [f"![{c.stem}]({c.name})" for c in curves] + [""]
    if examples:
        lines += ["## Test examples (boxes drawn by [CLS] cross-attention, last cross layer)", ""]
        for ex in examples:
            lines += [
                f"- `{ex['image_id']}` {ex['question']} → **{ex['prediction']}** ({ex['score']:.2f});"
                f" truth: {ex.get('answer', '?')}",
                "",
                f"  ![{ex['image_id']}]({ex['picture']})",
                "",
            ]
    out = Path(out_dir) / "report.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    atomic_write_json(Path(out_dir) / "report.json", {"stages": list(stages), "metrics": metrics})
    return out
