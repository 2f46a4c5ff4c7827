"""The real training step: ``lxmert-pretrain``'s Trainer against bench_model.py's model-only step, same config and batch.

The trainer row runs ``train_pretrain`` as users do: Hydra config, a feature store and a prepared split generated
in a temporary directory (36 boxes a pair, text padded to 20 tokens as in bench_model.py), the real loader and
masking, BertAdam (``optim.implementation=auto``), grad clip 1.0, and logging every ``--log-every`` steps; its
samples/s is the median of its logged windows after the first (which holds the warm-up). The model-only row is
bench_model.py's step (our model, AdamW fused, clip 1.0, one fixed batch, no loader, no logging), timed before and
after the trainer in the same process (median over both). The ratio says what the trainer costs on top of the model.

    python benchmarks/bench_trainer.py [--plan lxmert_tiny:32,lxmert_base:8] [--steps N] [--log-every K] [--workers W]

The default (``make bench``) is the tiny config only, about a minute; the table in benchmarks/README.md adds base.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import make_batch, ours_step_fn  # noqa: E402

from lxmert_repro.data.answers import AnswerVocab  # noqa: E402
from lxmert_repro.data.formats.example import Example  # noqa: E402
from lxmert_repro.data.prepare import save_split  # noqa: E402
from lxmert_repro.features.store import FeatureStoreWriter  # noqa: E402
from lxmert_repro.modeling import LxmertConfig, LxmertForPreTraining  # noqa: E402
from lxmert_repro.modeling.config import load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_data(root: Path, cfg: LxmertConfig, images: int, per_image: int, boxes: int = 36) -> dict[str, str]:
    """Store, split, vocabulary and answers sized like ``cfg`` (so the trainer builds the same model)."""
    rng = np.random.default_rng(0)
    dim = cfg.visual_feat_dim
    with FeatureStoreWriter(root / "store", feat_dim=dim, feat_dtype="float16") as w:
        for i in range(images):
            xy = np.sort(rng.uniform(0, 600, (boxes, 2, 2)).astype(np.float32), axis=1).reshape(boxes, 4)
            w.add(
                f"img{i}",
                480,
                640,
                xy[:, [0, 2, 1, 3]],
                rng.standard_normal((boxes, dim), np.float32),
                rng.integers(0, cfg.num_object_labels, boxes),
                rng.uniform(size=boxes),
                rng.integers(0, cfg.num_attr_labels, boxes),
                rng.uniform(size=boxes),
            )
    (root / "tokenizer").mkdir()
    words = [f"w{i}" for i in range(cfg.vocab_size - len(SPECIAL))]
    (root / "tokenizer" / "vocab.txt").write_text("\n".join(SPECIAL + words) + "\n")
    answers = [f"a{i}" for i in range(cfg.num_qa_labels)]
    AnswerVocab(answers).save(root / "answers.json")
    exs, ids = [], []
    for i in range(images):
        for k in range(per_image):
            labels = {answers[int(rng.integers(len(answers)))]: 1.0} if k % 3 == 0 else {}
            exs.append(Example(f"img{i}", "s", "vqa" if labels else "mscoco", -1, labels, ""))
            ids.append([2] + rng.integers(len(SPECIAL), cfg.vocab_size, 18).tolist() + [3])  # 20 tokens
    save_split(exs, ids, root / "train")
    return {
        "store": str(root / "store"),
        "tokenizer": str(root / "tokenizer"),
        "answers": str(root / "answers.json"),
        "train": str(root / "train"),
    }


def trainer_samples_per_s(
    name: str, batch: int, steps: int, log_every: int, workers: int, root: Path, paths: dict[str, str]
) -> tuple[float, dict]:
    """Run train_pretrain; the median samples/s of its logged windows after the first, and the last record."""
    from hydra import compose, initialize_config_dir

    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    out = root / "run"
    overrides = [
        f"model={name}",
        "trainer=cpu",
        "trainer.progress_bar=false",
        "logger=jsonl",
        f"trainer.batch_size={batch}",
        f"trainer.max_steps={steps}",
        f"trainer.log_every_n_steps={log_every}",
        f"trainer.num_workers={workers}",
        "trainer.grad_clip=1.0",
        "data.pad_to_max_length=true",
        f"data.features={paths['store']}",
        f"data.tokenizer_dir={paths['tokenizer']}",
        f"data.pretrain.train={paths['train']}",
        "data.pretrain.val=null",
        f"data.pretrain.answers={paths['answers']}",
        f"paths.output_dir={out}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose(config_name="pretrain", overrides=overrides)
    train_pretrain(cfg)
    rows = [r for r in read_metrics(out) if "samples_per_s" in r]
    if len(rows) < 2:
        raise SystemExit(f"--steps {steps} / --log-every {log_every} gives {len(rows)} log windows; need 2 or more")
    return statistics.median(r["samples_per_s"] for r in rows[1:]), rows[-1]


def model_only_samples_per_s(cfg: LxmertConfig, batch: int, rounds: int, steps: int) -> list[float]:
    """bench_model.py's step (ours, fp32) on one fixed batch: samples/s per round."""
    torch.manual_seed(0)
    model = LxmertForPreTraining(cfg).train()
    step = ours_step_fn(model, make_batch(cfg, batch))
    step()
    step()
    out = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        out.append(batch * steps / (time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--plan", default="lxmert_tiny:32", help="config:batch pairs, e.g. lxmert_tiny:32,lxmert_base:8")
    p.add_argument("--steps", type=int, default=None, help="trainer steps (default tiny 120, base 12)")
    p.add_argument("--log-every", type=int, default=None, help="trainer.log_every_n_steps (default steps / 6)")
    p.add_argument("--workers", type=int, default=1, help="trainer.num_workers (loader processes)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads, as bench_model.py")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    print(f"torch {torch.__version__}, cpu, threads {torch.get_num_threads()}, loader workers {args.workers}")
    print(
        f"{'config':<12} {'batch':>5}  {'model-only samples/s':>20} {'trainer samples/s':>18} {'ratio':>6} "
        f"{'tokens/s':>9} {'GFLOP/s':>8}"
    )
    for item in args.plan.split(","):
        name, batch = item.split(":")[0], int(item.split(":")[1])
        cfg = load_config(ROOT / "configs" / "model" / f"{name}.yaml")
        base = cfg.hidden_size >= 512
        steps = args.steps or (12 if base else 120)
        log_every = args.log_every or max(1, steps // 6)
        rounds, per_round = (3, 1) if base else (3, 10)
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            # enough pairs for every step in one epoch: a real epoch is ~36K steps, so no epoch-end checkpoint
            # or loader restart belongs in the timed windows
            paths = build_data(root, cfg, images=(steps + 2) * batch // 10 + 1, per_image=10)
            model_only = model_only_samples_per_s(cfg, batch, rounds, per_round)
            trainer, last = trainer_samples_per_s(name, batch, steps, log_every, args.workers, root, paths)
            model_only += model_only_samples_per_s(cfg, batch, rounds, per_round)
        mo = statistics.median(model_only)
        print(
            f"{name:<12} {batch:>5}  {mo:>20.2f} {trainer:>18.2f} {trainer / mo:>5.2f}x "
            f"{last.get('tokens_per_s', float('nan')):>9.0f} {last.get('model_flops_per_s', float('nan')) / 1e9:>8.1f}",
            flush=True,
        )
        print(
            "  last trainer record: "
            + json.dumps(
                {k: round(v, 4) if isinstance(v, float) else v for k, v in last.items() if not k.startswith("train/")}
            )
        )


if __name__ == "__main__":
    main()
