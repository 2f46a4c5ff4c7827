#!/usr/bin/env python
"""easy-VQA (PyPI ``easy-vqa``) images -> an NLVR2-format pair task (lxmert_repro/data/easy_vqa_tasks.py): statements
about two images whose truth needs both ("both images contain a circle", "the left shape is red and the right one
is not", "the two shapes have the same color", ...), each on 2 image pairs that make it true and 2 that make it
false. Image colour and shape come from the images' own easy-VQA questions.

    python scripts/easy_vqa_to_nlvr2.py --out-dir data/easy_vqa_nlvr2 [--train 3000 --test 500]
writes ``train.json`` and ``test.json`` in LXMERT's NLVR2 format. Then:
lxmert-prepare data=easy_vqa_nlvr2 features=data/easy_vqa/features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lxmert_repro.data.easy_vqa_tasks import easy_vqa_questions, image_attributes, to_nlvr2
from lxmert_repro.io_utils import atomic_write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="data/easy_vqa_nlvr2")
    ap.add_argument("--train", type=int, default=3000, help="statements in train (4 examples each)")
    ap.add_argument("--test", type=int, default=500, help="statements in test (4 examples each)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images per split (tests)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, (split, n) in enumerate((("train", args.train), ("test", args.test))):
        attrs = image_attributes(easy_vqa_questions(split))
        if args.limit is not None:
            attrs = {k: v for k, v in attrs.items() if k < args.limit}
        entries = to_nlvr2(attrs, split, n, seed=args.seed + i)
        atomic_write_json(out / f"{split}.json", entries, indent=None)
        print(f"{split}: {len(entries)} examples ({n} statements) over {len(attrs)} images -> {out / f'{split}.json'}")


if __name__ == "__main__":
    main()
