"""LXMERT's own json files: the VQA/GQA task json and the pretraining json."""
from __future__ import annotations

import os
from typing import Iterable

from lxmert_repro.data.answer_normalization import lxmert_convert_answer
from lxmert_repro.data.formats.example import Example, load_json, require


def read_lxmert_vqa(path: str | os.PathLike, source: str = "vqa") -> list[Example]:
    """``[{img_id, sent, label: {answer: score}, question_id, question_type, answer_type}]`` (labels already
    normalised and scored by LXMERT's preprocessing; test files have no ``label``)."""
    data = load_json(path, "LXMERT VQA json")
    if not isinstance(data, list):
        raise ValueError(f"LXMERT VQA json '{path}': expected a list of entries, got {type(data).__name__}")
    out = []
    for i, d in enumerate(data):
        require(d, ("img_id", "sent", "question_id"), path, f"entry {i}")
        label = {str(k): float(v) for k, v in d.get("label", {}).items()}
        main = max(label, key=label.get) if label else ""
        qid = d["question_id"]
        out.append(Example(str(d["img_id"]), d["sent"], source, int(qid) if str(qid).isdigit() else i,
                           label, main, d.get("question_type", ""), d.get("answer_type", "")))
    return out


def read_lxmert_pretrain(path: str | os.PathLike, sources: Iterable[str] | None = None) -> list[Example]:
    """``[{img_id, sentf: {source: [sentences]}, labelf: {source: [{answer: score}]}}]``: one example per
    sentence. ``labelf[source][i]`` labels ``sentf[source][i]``; answers converted like LXMERT's answer
    table (``lxmert_convert_answer``); ``sources`` keeps only those sentence sources (default all)."""
    data = load_json(path, "LXMERT pretraining json")
    if not isinstance(data, list):
        raise ValueError(f"LXMERT pretraining json '{path}': expected a list of entries, got {type(data).__name__}")
    wanted = None if sources is None else set(sources)
    out = []
    for i, d in enumerate(data):
        require(d, ("img_id", "sentf"), path, f"entry {i}")
        labelf = d.get("labelf", {})
        for src, sents in d["sentf"].items():
            if wanted is not None and src not in wanted:
                continue
            labels = labelf.get(src)
            if labels is not None and len(labels) != len(sents):
                raise ValueError(f"LXMERT pretraining json '{path}', entry {i} ({d['img_id']}): labelf['{src}'] has "
                                 f"{len(labels)} labels for {len(sents)} sentences")
            for j, sent in enumerate(sents):
                label: dict[str, float] = {}
                if labels is not None:
                    for ans, score in labels[j].items():
                        conv = lxmert_convert_answer(ans)
                        label[conv] = max(label.get(conv, 0.0), float(score))
                main = max(label, key=label.get) if label else ""
                out.append(Example(str(d["img_id"]), sent, src, -1, label, main))
    return out
