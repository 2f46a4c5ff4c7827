"""Detectors: tiny forward/backward, box-selection rules, weight round trips for every family."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from lxmert_repro.cli import CONFIG_DIR as PACKAGE_CONFIG_DIR
from lxmert_repro.features.box_selection import BottomUpSelection, NmsLoopSelection
from lxmert_repro.features.detectors import build_detector, load_detector, save_detector
from lxmert_repro.features.detectors.heads import AttributePredictor, RegionRoIHeads
from lxmert_repro.features.detectors.resnet_c4 import build_resnet_c4_detector
from lxmert_repro.features.detectors.small import build_small_detector
from lxmert_repro.features.detectors.torchvision_frcnn import FAMILIES, build_torchvision_detector
from lxmert_repro.features.detectors.weights import load_weights, ours_to_detectron2, ours_to_torchvision

CONFIG_DIR = str(PACKAGE_CONFIG_DIR / "detector")


def tiny_c4(seed: int = 0):
    torch.manual_seed(seed)
    return build_resnet_c4_detector(
        list("abcde"),
        list("xyz"),
        blocks=(1, 1, 1),
        res5_blocks=2,
        stem_channels=8,
        res2_channels=16,
        cls_embed_dim=8,
        attr_hidden_dim=16,
        min_size=96,
        max_size=160,
        rpn={"hidden": 16, "post_nms_top_n_test": 40},
        selection=BottomUpSelection(min_boxes=3, max_boxes=8),
    )


def images(n=2, h=70, w=90, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) * 255 for _ in range(n)]


def targets(n=2):
    return [
        {
            "boxes": torch.tensor([[10.0, 12.0, 40.0, 50.0]]),
            "labels": torch.tensor([i % 3]),
            "attributes": torch.tensor([1]),
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("builder", ["small", "c4"])
def test_forward_backward_and_extract(builder):
    torch.manual_seed(0)
    model = build_small_detector(["circle", "square", "tri"], ["red", "blue"]) if builder == "small" else tiny_c4()
    model.train()
    losses = model(images(), targets())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg", "loss_attribute"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())
    assert model.roi_heads.box_predictor.attr_score.weight.grad.abs().sum() > 0
    assert model.rpn.head.objectness_logits.weight.grad.abs().sum() > 0

    dets = model.extract(images(h=70, w=90))
    assert model.training  # extract restores the mode
    sel = model.selection
    for d in dets:
        assert sel.min_boxes <= d.num_boxes <= sel.max_boxes
        assert d.features.shape == (d.num_boxes, model.feat_dim)
        assert (d.boxes[:, 2] <= 90).all() and (d.boxes[:, 3] <= 70).all() and (d.boxes >= 0).all()
        assert (d.obj_ids < len(model.object_classes)).all() and (d.attr_ids < len(model.attribute_classes)).all()
        assert torch.all(d.obj_conf[:-1] >= d.obj_conf[1:])  # most confident first

    given = [torch.tensor([[5.0, 6.0, 30.0, 40.0], [0.0, 0.0, 90.0, 70.0]]), torch.tensor([[1.0, 1.0, 20.0, 20.0]])]
    dets = model.extract(images(h=70, w=90), given_boxes=given)
    for d, g in zip(dets, given):
        torch.testing.assert_close(d.boxes, g, rtol=0, atol=1e-4)
        assert d.features.shape == (g.shape[0], model.feat_dim)


def test_bottom_up_selection_rule():
    proposals = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 60, 60], [80, 80, 90, 90]], dtype=torch.float)
    probs = torch.tensor([[0.6, 0.3], [0.5, 0.45], [0.1, 0.15], [0.05, 0.0]])  # (R, C) without background
    sel = BottomUpSelection(nms_iou=0.3, conf_threshold=0.2, min_boxes=1, max_boxes=10)(proposals, None, probs)
    # box 1 loses class 0 to box 0 (IoU 0.81) but survives class 1 with 0.45; box 2 (0.15) and 3 fail 0.2
    assert sel.keep.tolist() == [0, 1]
    torch.testing.assert_close(sel.obj_conf, torch.tensor([0.6, 0.5]))  # label/conf: argmax of all classes
    assert sel.obj_ids.tolist() == [0, 0]
    sel = BottomUpSelection(min_boxes=3, max_boxes=3)(proposals, None, probs)
    assert sel.keep.tolist() == [0, 1, 2]  # clamped up to 3 by confidence
    torch.testing.assert_close(sel.boxes, proposals[[0, 1, 2]])


def test_nms_loop_selection_rule():
    regressed = torch.tensor(
        [[[0, 0, 10, 10]], [[1, 1, 10, 10]], [[2, 2, 11, 11]], [[50, 50, 60, 60]]], dtype=torch.float
    )
    probs = torch.tensor([[0.9], [0.8], [0.7], [0.6]])
    sel = NmsLoopSelection(nms_thresholds=[0.3, 0.9], min_boxes=3, max_boxes=10)(None, regressed, probs)
    assert sel.keep.tolist() == [0, 1, 2, 3]  # 0.3 keeps only 2, so 0.9 is tried
    sel = NmsLoopSelection(nms_thresholds=[0.3, 0.9], min_boxes=2, max_boxes=10)(None, regressed, probs)
    assert sel.keep.tolist() == [0, 3]
    assert not sel.from_proposals


def test_vg_r101_c4_detectron2_weights_round_trip(tmp_path):
    src = tiny_c4(seed=1)
    sd = ours_to_detectron2(src)
    sd["backbone.stem.conv1.norm.num_batches_tracked"] = torch.tensor(0)  # as saved from a BatchNorm2d
    torch.save(sd, tmp_path / "pytorch_model.bin")
    dst = tiny_c4(seed=2)
    load_weights(dst, tmp_path / "pytorch_model.bin", "detectron2")
    for k, v in src.state_dict().items():
        torch.testing.assert_close(dst.state_dict()[k], v, rtol=0, atol=0)
    a, b = src.extract(images()), dst.extract(images())
    for x, y in zip(a, b):
        torch.testing.assert_close(x.features, y.features)
        torch.testing.assert_close(x.boxes, y.boxes)

    broken = dict(sd)
    broken.pop("roi_heads.res5.1.conv2.weight")
    broken["roi_heads.box_predictor.extra.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises(ValueError, match="the model lacks:\n  roi_heads.box_predictor.extra.weight"):
        load_weights(dst, tmp_path / "broken.bin", "detectron2")
    broken.pop("roi_heads.box_predictor.extra.weight")
    torch.save({**broken, "pixel_mean": torch.zeros(3)}, tmp_path / "unknown.bin")
    with pytest.raises(ValueError, match=r"no part of vg_r101_c4 maps: \['pixel_mean'\]"):
        load_weights(dst, tmp_path / "unknown.bin", "detectron2")
    torch.save(broken, tmp_path / "broken.bin")
    with pytest.raises(ValueError, match=r"missing from the file:\n  roi_heads.box_head.res5.1.conv2.weight"):
        load_weights(dst, tmp_path / "broken.bin", "detectron2")
    sd["proposal_generator.anchor_generator.cell_anchors.0"] = sd["proposal_generator.anchor_generator.cell_anchors.0"][
        :9
    ]
    torch.save(sd, tmp_path / "anchors.bin")
    with pytest.raises(ValueError, match="cell_anchors.0"):
        load_weights(dst, tmp_path / "anchors.bin", "detectron2")


def test_full_vg_r101_c4_has_the_frcnn_vg_finetuned_tensors():
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("vg_r101_c4")
    with torch.device("meta"):
        model = build_detector(cfg)
    sd = ours_to_detectron2(model)
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    assert len(shapes) == 536  # 520 backbone/res5 tensors + RPN 6 + predictor 9 + anchors
    assert shapes["backbone.stem.conv1.weight"] == (64, 3, 7, 7)
    assert shapes["backbone.res4.22.conv3.norm.running_var"] == (1024,)
    assert shapes["proposal_generator.rpn_head.conv.weight"] == (512, 1024, 3, 3)
    # frcnn-vg-finetuned: 12 anchors per location (Caffe scales 4, 8, 16, 32 at stride 16 x 3 ratios)
    assert shapes["proposal_generator.rpn_head.objectness_logits.weight"] == (12, 512, 1, 1)
    assert shapes["proposal_generator.rpn_head.anchor_deltas.weight"] == (48, 512, 1, 1)
    assert shapes["proposal_generator.anchor_generator.cell_anchors.0"] == (12, 4)
    assert shapes["roi_heads.res5.0.shortcut.weight"] == (2048, 1024, 1, 1)
    assert shapes["roi_heads.box_predictor.cls_score.weight"] == (1601, 2048)
    assert shapes["roi_heads.box_predictor.bbox_pred.weight"] == (6400, 2048)
    assert shapes["roi_heads.box_predictor.cls_embedding.weight"] == (1601, 256)
    assert shapes["roi_heads.box_predictor.fc_attr.weight"] == (512, 2304)
    assert shapes["roi_heads.box_predictor.attr_score.weight"] == (401, 512)
    assert model.feat_dim == 2048


@pytest.mark.parametrize("family", ["fasterrcnn_mobilenet_v3_large_320_fpn", "fasterrcnn_resnet50_fpn_v2"])
def test_torchvision_weights_round_trip(tmp_path, family):
    torch.manual_seed(0)
    tv = FAMILIES[family](weights=None, weights_backbone=None, num_classes=4, min_size=96, max_size=128).eval()
    torch.save(tv.state_dict(), tmp_path / "tv.pth")
    ours = build_torchvision_detector(family, ["a", "b", "c"], min_size=96, max_size=128)
    load_weights(ours, tmp_path / "tv.pth", "torchvision")
    assert ours.feat_dim == 1024
    x = torch.randn(5, 1024)
    tv_logits, tv_deltas = tv.roi_heads.box_predictor(x)
    logits, deltas, attr = ours.roi_heads.box_predictor(x)
    torch.testing.assert_close(logits.softmax(1)[:, :-1], tv_logits.softmax(1)[:, 1:])  # background last vs first
    torch.testing.assert_close(deltas, tv_deltas[:, 4:])
    assert attr is None
    back = ours_to_torchvision(ours)
    assert set(back) == set(tv.state_dict())
    # the backbone + RPN are torchvision's own modules: identical proposals
    img = images(1, 120, 100)
    il, _ = ours._prepare(img)
    with torch.no_grad():
        p_ours, _ = ours.eval().rpn(il, ours._features(il.tensors))
        p_tv, _ = tv.rpn(il, tv.backbone(il.tensors))
    torch.testing.assert_close(p_ours[0], p_tv[0])
    dets = ours.extract(img)
    assert dets[0].features.shape[1] == 1024


def test_checkpoint_dir_round_trip(tmp_path):
    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("easy_vqa_small")
    torch.manual_seed(3)
    model = build_detector(cfg)
    save_detector(model, cfg, tmp_path / "ckpt")
    loaded, loaded_cfg = load_detector(tmp_path / "ckpt")
    assert loaded_cfg.model.object_classes == ["circle", "rectangle", "triangle"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[k], v, rtol=0, atol=0)


def test_batched_bottom_up_confidences_equal_the_per_class_loop():
    from torchvision.ops import nms

    g = torch.Generator().manual_seed(0)
    sel = BottomUpSelection(nms_iou=0.3)
    props, probs = [], []
    for n in (30, 0, 17):
        xy = torch.rand(n, 2, generator=g) * 50
        props.append(torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 30], 1))
        probs.append(torch.rand(n, 4, generator=g).softmax(1))
    got = sel.batch_confidences(props, probs)
    for p, s, m in zip(props, probs, got):
        ref = torch.zeros(p.shape[0])
        for c in range(s.shape[1]):  # bottom-up attention's loop
            k = nms(p, s[:, c], 0.3)
            ref[k] = torch.maximum(ref[k], s[k, c])
        torch.testing.assert_close(m, ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bottom_up_confidences_equal_per_class_nms(seed):
    """The all-classes-at-once NMS gives exactly bottom-up's loop of torchvision ``nms`` per image and class."""
    from torchvision.ops import nms

    g = torch.Generator().manual_seed(seed)
    sel = BottomUpSelection(nms_iou=0.3)
    proposals, probs = [], []
    for n in (40, 0, 25):  # images with different numbers of proposals, one with none
        xy = torch.rand(n, 2, generator=g) * 60
        proposals.append(torch.cat([xy, xy + 5 + torch.rand(n, 2, generator=g) * 30], dim=1))
        probs.append(torch.softmax(torch.randn(n, 7, generator=g) * 2, dim=1))
    got = sel.batch_confidences(proposals, probs)
    for p, s, conf in zip(proposals, probs, got):
        want = torch.zeros(p.shape[0])
        for c in range(s.shape[1]):
            keep = nms(p, s[:, c], 0.3)
            want[keep] = torch.maximum(want[keep], s[keep, c])
        torch.testing.assert_close(conf, want, rtol=0, atol=0)


# ---- the VG port's rules, recomputed independently (values stated from the port's formulas) ------------------
# processing_image.py / ResizeShortestEdge: scale the short side to 600 unless the long side passes 1000, sides
# rounded half up. (h, w) -> (h', w'), the 12 most common COCO / VG image sizes:
PORT_RESIZED = {
    (480, 640): (600, 800),
    (640, 480): (800, 600),
    (427, 640): (600, 899),
    (640, 427): (899, 600),
    (375, 500): (600, 800),
    (500, 375): (800, 600),
    (426, 640): (600, 901),
    (333, 500): (600, 901),  # 900.9 -> 901
    (500, 333): (901, 600),
    (424, 640): (600, 906),  # 905.66 -> 906 (torchvision: 905)
    (768, 1024): (600, 800),
    (500, 500): (600, 600),
}


def test_resize_follows_the_port_rounding_for_common_sizes():
    from lxmert_repro.features.detectors.transform import RoundedResizeTransform

    with initialize_config_dir(CONFIG_DIR, version_base=None):
        cfg = compose("vg_r101_c4_port")
    with torch.device("meta"):
        transform = build_detector(cfg).transform
    assert (transform.min_size, transform.max_size) == (600, 1000)
    t = RoundedResizeTransform(600, 1000)
    for (h, w), want in PORT_RESIZED.items():
        il, _ = t([torch.zeros(3, h, w)])
        assert tuple(il.tensors.shape[-2:]) == want and il.image_sizes == [want], (h, w)
    # a batch pads to its largest image only (0 after the mean is subtracted); one image is not padded
    il, _ = t([torch.full((3, 333, 500), 128.0), torch.full((3, 480, 640), 128.0)])
    assert tuple(il.tensors.shape) == (2, 3, 600, 901) and il.image_sizes == [(600, 901), (600, 800)]
    assert il.tensors[1, :, :, 800:].abs().max() == 0
    torch.testing.assert_close(il.tensors[1, :, 0, 0], torch.tensor([128 - 102.9801, 128 - 115.9465, 128 - 122.7717]))


def test_attribute_confidence_softmax_rules():
    logits = torch.tensor([[2.0, 1.0, 0.0, 3.0], [0.0, 0.0, 0.0, 0.0]])  # 3 attributes + "no attribute" last
    heads = {
        rule: RegionRoIHeads(None, None, AttributePredictor(4, 2, 3), attr_softmax=rule)
        for rule in ("all", "attributes")
    }
    # the port: softmax over the 3 real attributes: e^2 / (e^2 + e + 1) = 0.665241, row 2: 1/3
    conf, ids = heads["attributes"].attribute_probs(logits).max(dim=1)
    torch.testing.assert_close(conf, torch.tensor([0.665241, 1 / 3]))
    assert ids.tolist() == [0, 0]
    # LXMERT's extraction: softmax over all 4, then max of the real ones: e^2 / (e^3 + e^2 + e + 1) = 0.236883
    conf, _ = heads["all"].attribute_probs(logits).max(dim=1)
    torch.testing.assert_close(conf, torch.tensor([0.236883, 0.25]))
    with pytest.raises(ValueError, match="roi.attr_softmax must be one of"):
        RegionRoIHeads(None, None, AttributePredictor(4, 2, 3), attr_softmax="max")


def test_anchor_grid_is_the_stride_16_grid_of_the_feature_map():
    """333x500 -> 600x901 -> res4 38x57 (stride 16, rounded up); anchors centred at (x, y) * 16, 12 per cell."""
    torch.manual_seed(0)
    model = build_resnet_c4_detector(
        list("ab"),
        [],
        blocks=(1, 1, 1),
        res5_blocks=1,
        stem_channels=8,
        res2_channels=16,
        min_size=600,
        max_size=1000,
        rpn={"hidden": 8, "anchor_sizes": [64, 128, 256, 512]},
    ).eval()
    il, _ = model._prepare([torch.rand(3, 333, 500) * 255])
    with torch.no_grad():
        feat = model._features(il.tensors)["res4"]
    assert tuple(feat.shape[-2:]) == (38, 57)
    anchors = model.rpn.anchor_generator(il, [feat])[0]  # (38 * 57 * 12, 4), cell-major
    assert anchors.shape == (38 * 57 * 12, 4)
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    torch.testing.assert_close(centres[-1], torch.tensor([56 * 16.0, 37 * 16.0]))  # torchvision's 901 // 57 = 15
    torch.testing.assert_close(centres[12 * 57], torch.tensor([0.0, 16.0]))
    w = 64 * 2**0.5  # size 64, ratio h/w 0.5: w = sqrt(64^2 / 0.5), h = w / 2
    torch.testing.assert_close(anchors[0], torch.tensor([-w / 2, -w / 4, w / 2, w / 4]))


def test_rpn_ranks_proposals_by_logits_not_tied_probabilities():
    """Logits 17 and 18 are both sigmoid 1.0 in fp32; NMS must keep the box with the higher logit."""
    rpn = tiny_c4().rpn.eval()
    proposals = torch.tensor([[[0.0, 0, 50, 50], [1, 1, 50, 50], [60, 60, 90, 90], [5, 5, 5, 30]]])  # (1, 4, 4)
    logits = torch.tensor([[17.0], [18.0], [-3.0], [20.0]])  # the last box has zero width: dropped
    assert torch.sigmoid(logits[0]) == torch.sigmoid(logits[1])
    boxes, scores = rpn.filter_proposals(proposals, logits, [(100, 100)], [4])
    torch.testing.assert_close(boxes[0], proposals[0, [1, 2]])
    torch.testing.assert_close(scores[0], torch.tensor([18.0, -3.0]))


def test_extract_is_batch_invariant_with_mixed_sizes():
    model = tiny_c4(seed=4)
    ims = images(1, 70, 90, seed=1) + images(1, 90, 70, seed=2) + images(1, 70, 90, seed=3) + images(1, 64, 64, seed=4)
    together = model.extract(ims)
    for i, im in enumerate(ims):
        alone = model.extract([im])[0]
        for field in ("boxes", "features", "obj_conf", "attr_conf", "obj_ids", "attr_ids"):
            torch.testing.assert_close(getattr(together[i], field), getattr(alone, field), rtol=0, atol=0)
