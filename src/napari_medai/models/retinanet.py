"""A small MONAI RetinaNet for lung nodules, buildable and trainable without torchvision.

MONAI's own builders (``resnet_fpn_feature_extractor``, ``BackboneWithFPN``) take their
layer getter from torchvision, which does not import beside this project's torch build, and
``RetinaNetDetector``'s training code asks ``isinstance(matcher, torchvision Matcher)``
before it tries MONAI's own ATSS matcher.  So this module

* builds the feature pyramid itself: MONAI's 3D ``ResNet`` stem and stages feed MONAI's
  ``FeaturePyramidNetwork`` (no torchvision inside), and
* replaces the two torchvision placeholders in ``retinanet_detector`` by a class nothing is
  an instance of, so the ``isinstance`` checks fall through to the ATSS matcher and the
  hard-negative sampler, which are MONAI's own (:func:`allow_training_without_torchvision`).

:class:`NoduleRetinaNet` is what a model card names (``network.name``); it is a
``RetinaNetDetector``, so :func:`napari_medai.models.detection.run_box_detector` runs it like
any MONAI detection bundle.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from torch import nn


class _TorchvisionAbsent:
    """Stands in for torchvision's Matcher/Sampler: nothing is an instance of it."""


def allow_training_without_torchvision() -> None:
    from monai.apps.detection.networks import retinanet_detector as rd
    from monai.utils import optional_import

    for name in ("Matcher", "BalancedPositiveNegativeSampler"):
        current = getattr(rd, name)
        # optional_import's placeholder raises on any use, isinstance() included.
        _, found = optional_import("torchvision.models.detection._utils", name=name)
        if not found and current is not _TorchvisionAbsent:
            setattr(rd, name, _TorchvisionAbsent)


class ResNetPyramid(nn.Module):
    """ResNet stages 1..len(returned) under a feature pyramid; ``out_channels`` per level."""

    def __init__(self, in_channels: int = 1, planes: Sequence[int] = (16, 32, 64, 128),
                 blocks: Sequence[int] = (1, 1, 1, 1), stem_stride: Sequence[int] = (1, 2, 2),
                 levels: int = 3, out_channels: int = 32):
        super().__init__()
        from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
        from monai.networks.nets import resnet

        backbone = resnet.ResNet(block="basic", layers=list(blocks), block_inplanes=list(planes), spatial_dims=3,
                                 n_input_channels=in_channels, conv1_t_size=(3, 7, 7),
                                 conv1_t_stride=tuple(stem_stride), no_max_pool=True)
        self.stem = nn.Sequential(backbone.conv1, backbone.bn1, backbone.act)
        self.stages = nn.ModuleList(getattr(backbone, f"layer{i + 1}") for i in range(levels))
        self.fpn = FeaturePyramidNetwork(spatial_dims=3, in_channels_list=list(planes[:levels]),
                                         out_channels=out_channels)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        x = self.stem(x)
        features = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            features[str(i)] = x
        return self.fpn(features)


class NoduleRetinaNet(RetinaNetDetector):
    """RetinaNetDetector around a small ResNet-FPN RetinaNet (one class: nodule).

    Anchor shapes are in input voxels at the finest level (axes as the card's ``axes``) and
    double at each coarser level.  The defaults on the card's 2 × 1 × 1 mm grid (z first)
    are cubes of 6 and 10 mm at the finest level, 12 and 20 mm at the next, 24 and 40 mm at
    the coarsest; the ATSS matcher gives each nodule the anchors nearest its centre on every
    level, so a 4 mm nodule still gets positives.
    """

    def __init__(self, in_channels: int = 1, planes: Sequence[int] = (16, 32, 64, 128),
                 blocks: Sequence[int] = (1, 1, 1, 1), levels: int = 3, fpn_channels: int = 32,
                 anchor_shapes: Sequence[Sequence[int]] = ((3, 6, 6), (5, 10, 10)),
                 score_thresh: float = 0.02, nms_thresh: float = 0.22, detections_per_img: int = 100,
                 roi_size: Sequence[int] | None = (64, 128, 128), sw_batch_size: int = 1):
        from monai.apps.detection.networks.retinanet_network import RetinaNet
        from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape

        allow_training_without_torchvision()
        stem_stride = (1, 2, 2)
        features = ResNetPyramid(in_channels, planes, blocks, stem_stride, levels, fpn_channels)
        scales = tuple(2 ** i for i in range(levels))
        # Inputs must divide by the coarsest level's stride on each axis.
        divisible = tuple(s * 2 ** (levels - 1) for s in stem_stride)
        network = RetinaNet(spatial_dims=3, num_classes=1, num_anchors=len(anchor_shapes),
                            feature_extractor=features, size_divisible=divisible)
        anchors = AnchorGeneratorWithAnchorShape(feature_map_scales=scales,
                                                 base_anchor_shapes=tuple(tuple(a) for a in anchor_shapes))
        super().__init__(network, anchors)
        self.set_target_keys(box_key="box", label_key="label")
        self.set_atss_matcher(num_candidates=4, center_in_gt=False)
        self.set_hard_negative_sampler(batch_size_per_image=64, positive_fraction=0.3, pool_size=20, min_neg=16)
        self.set_box_selector_parameters(score_thresh=score_thresh, topk_candidates_per_level=1000,
                                         nms_thresh=nms_thresh, detections_per_img=detections_per_img)
        if roi_size is not None:
            # Whole scans go through in windows: the whole-volume pass would need several GB.
            self.set_sliding_window_inferer(roi_size=tuple(roi_size), sw_batch_size=sw_batch_size, overlap=0.25,
                                            mode="constant", device=None)
