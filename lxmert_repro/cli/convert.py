"""lxmert-convert: move model weights between the original repositories', transformers' and our checkpoint formats.

lxmert-convert SRC DST --from {auto,ours,transformers,<an architecture's file format>} --to {ours,transformers,reference}
"""

from __future__ import annotations

import argparse
import sys

from ..modeling.base import ROLES
from ..modeling.checkpoint import convert_checkpoint, formats
from ..modeling.config import load_config
from ..modeling.convert import CheckpointError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lxmert-convert", description=__doc__.strip().splitlines()[0])
    p.add_argument("src", help="checkpoint: our directory, a transformers directory, or an original .pth file")
    p.add_argument("dst", help="output directory")
    p.add_argument("--from", dest="src_format", default="auto", choices=("auto", *formats()))
    p.add_argument(
        "--to",
        dest="dst_format",
        default="ours",
        choices=("ours", "transformers", "reference"),
        help="reference: one file in the original repository's naming (ViLBERT)",
    )
    p.add_argument(
        "--config",
        help="model config (.yaml of lxmert_repro/configs/model or .json) for original "
        ".pth files, which carry no config: sizes are read from the tensors, the "
        "attention heads etc. from here (required for LXMERT when the hidden size "
        "is not 768)",
    )
    p.add_argument(
        "--model",
        dest="model_class",
        metavar="ROLE",
        help=f"convert into this role of the source's architecture: one of {list(ROLES)} or the class "
        "name (e.g. LxmertForVQA); default: the source's own",
    )
    p.add_argument("--num-answers", type=int, help="answer count when --model vqa gets a non-VQA source")
    p.add_argument(
        "--partial",
        action="store_true",
        help="load what fits and report the rest (e.g. drop pretraining heads) instead of failing",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config = load_config(args.config) if args.config else None
    try:
        report = convert_checkpoint(
            args.src,
            args.dst,
            args.src_format,
            args.dst_format,
            config,
            strict=not args.partial,
            model_class=args.model_class,
            num_answers=args.num_answers,
        )
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        print(f"lxmert-convert: error: {e}", file=sys.stderr)
        return 2
    print(report.describe(args.src))
    print(f"wrote {args.dst} ({args.dst_format})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
