"""Annotations -> prepared artifacts (the ``lxmert-prepare`` stage).

Writes, under ``output_dir``:
    tokenizer/            the tokenizer every later stage loads (BERT uncased copy, or trained WordPiece)
    answers.json          the answer vocabulary: a task's answers (VQA) or the pretraining QA table
    {split}/              one Arrow dataset per split (``datasets.save_to_disk``; memory-mapped when loaded)
    prepare_summary.json  counts per split, dropped examples (missing images), empty sentences, answer coverage
Columns: image_id, sentence, source, question_id, answers, answer_scores, main_answer, question_type,
answer_type, uid, image_ids (``Example.to_record``) + input_ids ([CLS] ... [SEP], at most max_length).
"""
from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

from omegaconf import MISSING

from lxmert_repro.config_schema import one_of
from lxmert_repro.data.answers import AnswerVocab, build_answer_vocab, build_pretrain_answer_table
from lxmert_repro.data.formats.example import Example
from lxmert_repro.io_utils import atomic_write_json

log = logging.getLogger(__name__)

TOKENIZER_DIR = "tokenizer"
ANSWERS_FILE = "answers.json"
SUMMARY_FILE = "prepare_summary.json"
KINDS = ("vqa", "pretrain")


@dataclass
class AnswersConfig:
    """Schema of ``data.answers``: where the answer vocabulary comes from."""

    file: Optional[str] = None
    from_splits: List[str] = field(default_factory=lambda: ["train"])
    min_count: int = 1
    normalizer: str = "vqa_official"
    qa_sources: Optional[List[str]] = None
    list: Optional[List[str]] = None  # a fixed vocabulary in this order (NLVR2: ["False", "True"], class 1 = True)


@dataclass
class DataConfig:
    """Schema of the ``data`` group (configs/data/) as lxmert-prepare reads it; ``splits`` maps a split name
    to a list of reader ``_target_`` nodes (checked against the readers' signatures)."""

    name: str = MISSING
    kind: str = MISSING
    splits: Dict[str, Any] = field(default_factory=dict)
    answers: AnswersConfig = field(default_factory=AnswersConfig)
    tokenizer_from_splits: List[str] = field(default_factory=lambda: ["train"])
    image_id_format: Optional[str] = None
    root: Optional[str] = None

    def __post_init__(self) -> None:
        one_of("data.kind", self.kind, KINDS)


def check_images(examples: list[Example], split: str, store: Any, missing: str = "error") -> tuple[list[Example], dict[str, int]]:
    """Every example's image must be in the feature store. ``missing='error'`` raises naming the image;
    ``'drop'`` drops those examples and returns counts."""
    if missing not in ("error", "drop"):
        raise ValueError(f"missing_images must be 'error' or 'drop', got '{missing}'")
    absent = sorted({i for e in examples for i in e.images} - set(store.image_ids))
    if not absent:
        return examples, {"dropped_examples": 0, "missing_images": 0}
    if missing == "error":
        raise ValueError(
            f"split '{split}': {len(absent)} image ids are not in the feature store {store.path}, e.g. "
            f"{absent[:5]} (extract them first, or set missing_images=drop to drop those examples)")
    gone = set(absent)
    kept = [e for e in examples if gone.isdisjoint(e.images)]
    log.warning("split %s: dropped %d examples of %d images missing from %s", split, len(examples) - len(kept),
                len(absent), store.path)
    return kept, {"dropped_examples": len(examples) - len(kept), "missing_images": len(absent)}


EMPTY_SENTENCES = ("warn", "drop", "error")


def check_sentences(examples: list[Example], split: str, empty: str = "warn") -> tuple[list[Example], int]:
    """Examples whose question/caption is empty (or only spaces): the model sees [CLS] [SEP] and nothing to
    ground. ``empty='warn'`` keeps them (a VQA split keeps every question id), ``'drop'`` drops them, ``'error'``
    raises naming them. Returns the examples kept and how many were empty."""
    if empty not in EMPTY_SENTENCES:
        raise ValueError(f"empty_sentences must be one of {EMPTY_SENTENCES}, got '{empty}'")
    blank = [e for e in examples if not e.sentence.strip()]
    if not blank:
        return examples, 0
    named = ", ".join(f"question_id {e.question_id}" if e.question_id >= 0 else f"a caption of image {e.image_id}"
                      for e in blank[:5])
    what = f"split '{split}': {len(blank)} of {len(examples)} examples have an empty sentence (e.g. {named})"
    if empty == "error":
        raise ValueError(f"{what}; fix the annotations, or set empty_sentences=drop (drop them) or warn (keep them)")
    if empty == "drop":
        log.warning("%s: dropped (empty_sentences=drop)", what)
        return [e for e in examples if e.sentence.strip()], len(blank)
    log.warning("%s: kept; set empty_sentences=drop to drop them or error to stop", what)
    return examples, len(blank)


def build_answers(examples_by_split: Mapping[str, list[Example]], kind: str, from_splits: Sequence[str],
                  min_count: int, normalizer: str = "vqa_official", qa_sources: Iterable[str] | None = None) -> AnswerVocab:
    """The task's answer vocabulary (``kind='vqa'``: main answers seen >= min_count times) or the
    pretraining QA table (``kind='pretrain'``: union of the QA sources' labels)."""
    chosen = [e for s in from_splits for e in examples_by_split[s]]
    if kind == "vqa":
        return build_answer_vocab((e.main_answer for e in chosen if e.main_answer), min_count, normalizer)
    if kind == "pretrain":
        by_source: dict[str, list[dict[str, float]]] = {}
        for e in chosen:
            if e.labels:
                by_source.setdefault(e.source, []).append(e.labels)
        return build_pretrain_answer_table(by_source, qa_sources, min_count)
    raise ValueError(f"data.kind must be 'vqa' or 'pretrain', got '{kind}'")


def tokenize(examples: list[Example], tokenizer: Any, max_length: int, batch_size: int = 10000) -> list[list[int]]:
    ids: list[list[int]] = []
    for i in range(0, len(examples), batch_size):
        chunk = [e.sentence for e in examples[i : i + batch_size]]
        ids.extend(tokenizer(chunk, truncation=True, max_length=max_length)["input_ids"])
    return ids


def save_split(examples: list[Example], input_ids: list[list[int]], out_dir: Path) -> None:
    """Arrow dataset written to a temporary directory, then moved into place."""
    import datasets

    cols: dict[str, list[Any]] = {k: [] for k in Example("", "", "").to_record()}
    for e in examples:
        for k, v in e.to_record().items():
            cols[k].append(v)
    cols["input_ids"] = input_ids
    features = datasets.Features({
        "image_id": datasets.Value("string"), "sentence": datasets.Value("string"), "source": datasets.Value("string"),
        "question_id": datasets.Value("int64"), "answers": datasets.Sequence(datasets.Value("string")),
        "answer_scores": datasets.Sequence(datasets.Value("float32")), "main_answer": datasets.Value("string"),
        "question_type": datasets.Value("string"), "answer_type": datasets.Value("string"),
        "uid": datasets.Value("string"), "image_ids": datasets.Sequence(datasets.Value("string")),
        "input_ids": datasets.Sequence(datasets.Value("int32")),
    })
    ds = datasets.Dataset.from_dict(cols, features=features)
    tmp = out_dir.parent / f".{out_dir.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    ds.save_to_disk(str(tmp))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)


def prepare(splits: Mapping[str, Sequence[Callable[[], list[Example]]] | Callable[[], list[Example]]],
            output_dir: str | os.PathLike, tokenizer_source: Any, *, kind: str = "vqa",
            answers_from: Sequence[str] = ("train",), answer_min_count: int = 1, answer_normalizer: str = "vqa_official",
            qa_sources: Iterable[str] | None = None, tokenizer_from: Sequence[str] = ("train",),
            max_length: int = 20, feature_store: Any = None, missing_images: str = "error",
            empty_sentences: str = "warn",
            answers_file: str | os.PathLike | None = None,
            answers_list: Sequence[str] | None = None,
            extra_summary: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read every split (each a reader or a list of readers returning ``Example`` lists), check images,
    build tokenizer and answers (or load them from ``answers_file``, e.g. LXMERT's trainval_label2ans.json, or take
    ``answers_list`` in its order, e.g. NLVR2's ["False", "True"]: row 1 = True),
    tokenize and save. Returns the summary (also written to disk)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    examples: dict[str, list[Example]] = {}
    summary: dict[str, Any] = {"kind": kind, "max_length": max_length, "splits": {}}
    for name, readers in splits.items():
        readers = readers if isinstance(readers, (list, tuple)) else [readers]
        exs = [e for r in readers for e in r()]
        stats: dict[str, Any] = {"read": len(exs)}
        if feature_store is not None:
            exs, dropped = check_images(exs, name, feature_store, missing_images)
            stats.update(dropped)
        exs, stats["empty_sentences"] = check_sentences(exs, name, empty_sentences)
        if not exs:
            raise ValueError(f"split '{name}' has no examples left")
        examples[name] = exs
        stats.update(examples=len(exs), images=len({i for e in exs for i in e.images}),
                     sources=dict(Counter(e.source for e in exs)))
        summary["splits"][name] = stats
    for s in list(answers_from) + list(tokenizer_from):
        if s not in examples:
            raise ValueError(f"split '{s}' (used for answers/tokenizer) is not among the splits {sorted(examples)}")

    tok = tokenizer_source.build((e.sentence for s in tokenizer_from for e in examples[s]), out / TOKENIZER_DIR)
    if answers_list is not None:
        answers = AnswerVocab(answers_list, "none")
    elif answers_file is not None:
        answers = AnswerVocab.load(answers_file)
    else:
        answers = build_answers(examples, kind, answers_from, answer_min_count, answer_normalizer, qa_sources)
    if len(answers) == 0:
        raise ValueError(f"the answer vocabulary built from splits {list(answers_from)} is empty")
    answers.save(out / ANSWERS_FILE)
    summary.update(vocab_size=len(tok), num_answers=len(answers), answer_normalizer=answers.normalizer)

    for name, exs in examples.items():
        ids = tokenize(exs, tok, max_length)
        save_split(exs, ids, out / name)
        labelled = [e for e in exs if e.labels]
        covered = sum(any(a in answers for a in e.labels) for e in labelled)
        lengths = [len(x) for x in ids]
        summary["splits"][name].update(
            labelled=len(labelled), labelled_with_known_answer=covered,
            at_max_length=sum(n >= max_length for n in lengths), mean_tokens=round(sum(lengths) / len(lengths), 2))
    if extra_summary:
        summary.update(extra_summary)
    atomic_write_json(out / SUMMARY_FILE, summary)
    return summary
