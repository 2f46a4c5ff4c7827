"""NLVR2 statements about an image pair: LXMERT's json (airsplay/lxmert data/nlvr2: a list of ``{identifier, img0,
img1, label: 0|1, sent, uid?}``) and the official jsonl (lil-lab/nlvr nlvr2/data: one ``{identifier, sentence,
label: "True"|"False", ...}`` per line, images named ``{identifier minus its last field}-img0`` / ``-img1``).
Labels become the answer "True" / "False"; ``uid`` keeps the identifier (its fields give the consistency groups)."""
from __future__ import annotations

import json
import os

from lxmert_repro.data.formats.example import Example, load_json, require

TRUE, FALSE = "True", "False"


def _label(value: object, path: str | os.PathLike, where: str) -> str | None:
    if value is None:
        return None
    if value in (1, 0) and not isinstance(value, str):
        return TRUE if value == 1 else FALSE
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return TRUE if value.lower() == "true" else FALSE
    raise ValueError(f"NLVR2 file '{path}', {where}: field 'label' must be 0/1 or \"True\"/\"False\", got {value!r}")


def read_nlvr2_annotations(path: str | os.PathLike) -> list[dict]:
    """The entries of either format: a json list, or json lines (the official files)."""
    try:
        text = open(path).read()
    except FileNotFoundError:
        raise FileNotFoundError(f"NLVR2 file not found: '{path}'") from None
    if text.lstrip().startswith("["):
        data = load_json(path, "NLVR2 json")
    else:
        data = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    data.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"NLVR2 jsonl '{path}', line {n}: not valid json: {e}") from None
    return data


def read_nlvr2(path: str | os.PathLike, image_id_format: str = "{image_id}") -> list[Example]:
    """One example per statement and image pair: ``image_ids`` = [img0, img1], label "True" / "False"."""
    out = []
    for i, d in enumerate(read_nlvr2_annotations(path)):
        require(d, ("identifier",), path, f"entry {i}")
        ident = str(d["identifier"])
        if "img0" in d:
            require(d, ("img0", "img1", "sent"), path, f"entry {i} ({ident})")
            imgs, sent = [str(d["img0"]), str(d["img1"])], d["sent"]
        else:
            require(d, ("sentence",), path, f"entry {i} ({ident})")
            stem = "-".join(ident.split("-")[:-1])
            imgs, sent = [f"{stem}-img0", f"{stem}-img1"], d["sentence"]
        imgs = [image_id_format.format(image_id=x) for x in imgs]
        label = _label(d.get("label"), path, f"entry {i} ({ident})")
        out.append(Example(imgs[0], sent, "nlvr2", i, {label: 1.0} if label else {}, label or "", uid=ident,
                           image_ids=imgs))
    return out
