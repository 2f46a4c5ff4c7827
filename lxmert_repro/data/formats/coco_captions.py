"""COCO captions json (``captions_train2014.json``): images + annotations with captions."""
from __future__ import annotations

import os
from pathlib import PurePath

from lxmert_repro.data.formats.example import Example, load_json, require


def read_coco_captions(path: str | os.PathLike, image_id_format: str | None = None,
                       source: str = "mscoco") -> list[Example]:
    """One example per caption. Image id: the image's file-name stem (``COCO_train2014_000000318556``,
    LXMERT's id) unless ``image_id_format`` is given (gets ``image_id`` int and ``file_name`` stem)."""
    obj = load_json(path, "COCO captions")
    if not isinstance(obj, dict) or "annotations" not in obj or "images" not in obj:
        raise ValueError(f"COCO captions file '{path}': expected an object with 'images' and 'annotations'")
    stems = {}
    for i, im in enumerate(obj["images"]):
        require(im, ("id", "file_name"), path, f"images[{i}]")
        stems[int(im["id"])] = PurePath(im["file_name"]).stem
    out = []
    for i, a in enumerate(obj["annotations"]):
        require(a, ("image_id", "caption"), path, f"annotations[{i}]")
        iid = int(a["image_id"])
        if iid not in stems:
            raise ValueError(f"COCO captions file '{path}', annotations[{i}]: image_id {iid} is not in 'images'")
        img = image_id_format.format(image_id=iid, file_name=stems[iid]) if image_id_format else stems[iid]
        out.append(Example(img, a["caption"].strip(), source))
    return out
