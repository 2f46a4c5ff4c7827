"""lxmert-features: inspect, show (PNG with boxes), TSV import/export commands."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from lxmert_repro.cli.features import main
from lxmert_repro.features.store import FeatureStore, FeatureStoreWriter


def make_store(path: Path) -> None:
    with FeatureStoreWriter(
        path,
        feat_dim=8,
        feat_dtype="float32",
        metadata={"object_classes": ["circle", "square"], "attribute_classes": ["red", "blue"]},
    ) as w:
        for i, n in enumerate([2, 5, 3]):
            rng = np.random.default_rng(i)
            w.add(
                str(i),
                64,
                64,
                np.array([[4, 4, 30, 30]] * n, np.float32),
                rng.normal(size=(n, 8)),
                np.arange(n) % 2,
                np.full(n, 0.9),
                np.ones(n),
                np.full(n, 0.5),
            )


def test_inspect_show_and_tsv_commands(tmp_path, capsys):
    make_store(tmp_path / "s")
    main(["inspect", str(tmp_path / "s")])
    info = json.loads(capsys.readouterr().out)
    assert info["images"] == 3 and info["total_boxes"] == 10
    assert info["boxes_per_image"] == {"min": 2, "mean": 3.33, "max": 5}
    assert (info["feat_dim"], info["feat_dtype"], info["object_classes"]) == (8, "float32", 2)

    import easy_vqa

    image_dir = Path(os.path.dirname(easy_vqa.__file__)) / "data" / "train" / "images"
    main(["show", str(tmp_path / "s"), "1", "--image-dir", str(image_dir), "--out", str(tmp_path / "show.png")])
    png = np.asarray(Image.open(tmp_path / "show.png").convert("RGB"))
    assert png.shape[0] > 100 and png.std() > 10  # an image was drawn

    main(["export-tsv", str(tmp_path / "s"), "--out", str(tmp_path / "f.tsv")])
    main(["import-tsv", str(tmp_path / "f.tsv"), "--out", str(tmp_path / "back"), "--feat-dtype", "float32"])
    a, b = FeatureStore(tmp_path / "s"), FeatureStore(tmp_path / "back")
    assert a.image_ids == b.image_ids
    for i in a.image_ids:
        np.testing.assert_array_equal(a[i].features, b[i].features)
        np.testing.assert_array_equal(a[i].attr_conf, b[i].attr_conf)
