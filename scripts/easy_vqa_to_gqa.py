#!/usr/bin/env python
"""easy-VQA (PyPI ``easy-vqa``) -> GQA-format question and choices files (lxmert_repro/data/easy_vqa_tasks.py says
how types, semantic programs, groups and entailed questions follow from easy-VQA's templates).

    python scripts/easy_vqa_to_gqa.py --out-dir data/easy_vqa_gqa [--limit N]
writes ``{train,test}_balanced_questions.json`` and ``{train,test}_choices.json``; image ids "{split}_{n}" are the
demo feature store's. Then: lxmert-prepare data=easy_vqa_gqa features=data/easy_vqa/features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lxmert_repro.data.easy_vqa_tasks import easy_vqa_questions, to_gqa
from lxmert_repro.io_utils import atomic_write_json


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out-dir", default="data/easy_vqa_gqa")
    ap.add_argument("--limit", type=int, default=None, help="only questions about the first N images per split (tests)")
    args = ap.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for split in ("train", "test"):
        rows = easy_vqa_questions(split)
        if args.limit is not None:
            rows = [r for r in rows if int(r[2]) < args.limit]
        questions, choices = to_gqa(rows, split)
        atomic_write_json(out / f"{split}_balanced_questions.json", questions, indent=None)
        atomic_write_json(out / f"{split}_choices.json", choices, indent=None)
        print(f"{split}: {len(questions)} questions -> {out}")


if __name__ == "__main__":
    main()
