"""models/retinanet.py: a MONAI RetinaNet that builds and trains without torchvision, and a
real RetinaNetDetector bundle (the Model Zoo's layout) through the box-detector path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fixed_rule_models import write_bundle

import napari_medai
from napari_medai.models.bundle import BundleTrustWarning
from napari_medai.models.loading import load_model
from napari_medai.models.retinanet import NoduleRetinaNet, ResNetPyramid, allow_training_without_torchvision

TINY = dict(planes=(8, 8, 16, 16), fpn_channels=8, anchor_shapes=((2, 4, 4),), roi_size=(8, 32, 32))


def test_the_pyramid_has_one_map_per_level_at_its_stride():
    net = ResNetPyramid(planes=(8, 8, 16, 16), levels=3, out_channels=8).eval()
    with torch.no_grad():
        maps = net(torch.zeros(1, 1, 8, 32, 32))
    assert [tuple(m.shape) for m in maps.values()] == [(1, 8, 8, 16, 16), (1, 8, 4, 8, 8), (1, 8, 2, 4, 4)]


def test_a_training_step_runs_on_monais_own_matcher_and_sampler():
    torch.manual_seed(0)
    det = NoduleRetinaNet(**TINY).train()
    images = torch.rand(2, 1, 8, 32, 32)
    targets = [{"box": torch.tensor([[2.0, 10, 12, 5, 16, 18]]), "label": torch.tensor([0])},
               {"box": torch.zeros(0, 6), "label": torch.zeros(0, dtype=torch.long)}]  # a crop without nodules
    losses = det(images, targets)
    assert set(losses) == {"classification", "box_regression"}
    assert all(torch.isfinite(v) for v in losses.values())
    (losses["classification"] + losses["box_regression"]).backward()
    assert det.network.classification_head.cls_logits.weight.grad.abs().sum() > 0


def test_the_workaround_is_idempotent_and_makes_isinstance_safe():
    from monai.apps.detection.networks import retinanet_detector as rd

    allow_training_without_torchvision()
    first = rd.Matcher
    allow_training_without_torchvision()
    assert rd.Matcher is first
    assert not isinstance(object(), rd.Matcher)  # the placeholder would raise here


def test_eval_returns_ranked_boxes_inside_the_input():
    torch.manual_seed(0)
    # score threshold 0: the untrained network's scores (about its 0.01 prior) all pass, so boxes come back
    det = NoduleRetinaNet(**TINY, score_thresh=0.0, detections_per_img=30).eval()
    with torch.no_grad():
        (out,) = det(torch.rand(1, 1, 16, 48, 48), use_inferer=True)
    boxes, scores = out["box"], out["label_scores"]
    assert boxes.shape[1] == 6 and len(boxes) == len(scores)
    assert 1 < len(boxes) <= 30  # some boxes, capped at detections_per_img
    assert torch.all(scores[:-1] >= scores[1:]) and torch.all(scores > 0)
    assert torch.all(boxes[:, :3] >= 0) and torch.all(boxes[:, 3:] <= torch.tensor([16, 48, 48]))
    assert torch.all(boxes[:, 3:] > boxes[:, :3])


@pytest.fixture
def retinanet_bundle(tmp_path):
    """A detection bundle laid out like the Model Zoo's lung_nodule_ct_detection: network_def a
    MONAI RetinaNet, detector a MONAI RetinaNetDetector with its anchors and detector_ops."""
    network_def = {
        "_target_": "monai.apps.detection.networks.retinanet_network.RetinaNet",
        "spatial_dims": 3, "num_classes": 1, "num_anchors": 1, "size_divisible": [8, 8, 4],
        "feature_extractor": {"_target_": "napari_medai.models.retinanet.ResNetPyramid",
                              "planes": [8, 8, 16, 16], "out_channels": 8, "stem_stride": [2, 2, 1]},
    }
    config = {
        "anchor_generator": {"_target_": "monai.apps.detection.utils.anchor_utils.AnchorGeneratorWithAnchorShape",
                             "feature_map_scales": [1, 2, 4], "base_anchor_shapes": [[4, 4, 2]]},
        "detector": {"_target_": "monai.apps.detection.networks.retinanet_detector.RetinaNetDetector",
                     "network": "@network", "anchor_generator": "@anchor_generator"},
        "detector_ops": ["$@detector.set_target_keys(box_key='box', label_key='label')",
                         "$@detector.set_box_selector_parameters(score_thresh=0.0, topk_candidates_per_level=50, "
                         "nms_thresh=0.2, detections_per_img=20)",
                         "$@detector.set_sliding_window_inferer(roi_size=[32, 32, 8], overlap=0.25, "
                         "sw_batch_size=1, mode='constant', device='cpu')"],
    }
    torch.manual_seed(3)
    from monai.bundle import ConfigParser

    parser = ConfigParser({"network_def": network_def})
    weights = parser.get_parsed_content("network_def").state_dict()
    folder = write_bundle(tmp_path / "retinanet_bundle", network_def, weights, pixdim=(2.0, 2.0, 4.0),
                          roi_size=(32, 32, 8), task="CT lung nodule detection", extra_config=config,
                          outputs={"box": {"type": "object", "format": "bounding box", "num_channels": 1,
                                           "channel_def": {"0": "nodule"}}})
    return folder, weights


def test_a_monai_retinanet_bundle_runs_through_the_box_detector_path(retinanet_bundle):
    from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector

    folder, weights = retinanet_bundle
    with pytest.warns(BundleTrustWarning):
        model = load_model(folder)
    assert isinstance(model.network, RetinaNetDetector) and model.card.extra["method"] == "boxes"
    loaded = model.network.network.state_dict()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)  # the bundle's weights, not a fresh init
    volume = np.full((16, 64, 64), -850.0, np.float32)
    volume[6:9, 20:28, 30:38] = 40.0
    findings = napari_medai.detect(volume, (2.0, 1.0, 1.0), model=model, max_findings=None)
    assert 0 < len(findings) <= 20  # score_thresh 0: the untrained network's boxes all come back
    assert [f.score for f in findings] == sorted((f.score for f in findings), reverse=True)
    for f in findings:
        (lo, hi) = np.array(f.bbox_voxel)
        assert np.all(lo >= 0) and np.all(hi <= np.array(volume.shape)) and np.all(hi > lo)
