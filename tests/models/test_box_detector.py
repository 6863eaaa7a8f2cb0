"""RetinaNet-style box detectors through ``api.detect`` (models/detection.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from fixed_rule_models import CT_WINDOW, BrightBlobDetector, ThresholdSegmenter, blob_volume, unit

import napari_medai
from napari_medai.errors import ModelError
from napari_medai.models.card import ModelCard
from napari_medai.models.detection import boxes_to_findings
from napari_medai.models.loading import LoadedModel
from napari_medai.postprocess.findings import findings_mask

SPACING = (2.0, 1.0, 1.0)
BLOBS = ((4, 8, 8, 2, 200.0), (10, 20, 20, 2, 0.0), (12, 6, 25, 1, -200.0))


def box_model(network=None, spacing=None, **extra) -> LoadedModel:
    card = ModelCard(
        name="blob boxes", task="detection", spacing=spacing, roi_size=(8, 32, 32), out_channels=1,
        intensity=dict(CT_WINDOW), network={"name": "fixed_rule_models.BrightBlobDetector"},
        extra={"method": "boxes", **extra},
    )
    return LoadedModel(card, (network or BrightBlobDetector(threshold=unit(-300))).eval())


def test_boxes_become_ranked_findings_measured_from_the_box():
    findings = napari_medai.detect(blob_volume(blobs=BLOBS), SPACING, model=box_model())
    assert [f.center_voxel for f in findings] == [[4.0, 8.0, 8.0], [10.0, 20.0, 20.0], [12.0, 6.0, 25.0]]
    assert [f.score for f in findings] == pytest.approx([unit(200), unit(0), unit(-200)], abs=1e-4)
    assert [f.label for f in findings] == [1, 2, 3]
    top = findings[0]
    assert top.bbox_voxel == [[2, 6, 6], [7, 11, 11]]
    assert top.diameter_mm == top.short_axis_mm == top.mean_diameter_mm == 5.0  # 5 pixels of 1 mm
    assert top.volume_ml == pytest.approx(math.pi / 6 * 10 * 5 * 5 / 1000, abs=1e-4)  # inscribed ellipsoid
    assert top.lung_rads == "2" and top.outline == "box"  # the reports say what it was measured on
    assert top.mask.shape == (5, 5, 5) and top.mask[2, 2, 2] and not top.mask[0, 0, 0]
    mask = findings_mask(findings, (16, 32, 32))
    assert [mask[4, 8, 8], mask[10, 20, 20], mask[12, 6, 25]] == [1, 2, 3]


def test_boxes_come_back_through_resampling_and_ras_reorientation():
    volume = np.full((16, 32, 32), -850.0, np.float32)
    volume[4:8, 8:12, 20:24] = 200.0  # even edges: exact after halving the grid
    detector = BrightBlobDetector(threshold=unit(-300))
    model = box_model(detector, spacing=(4.0, 2.0, 2.0), axes="RAS")
    (finding,) = napari_medai.detect(volume, SPACING, model=model)
    assert detector.input_shapes == [(16, 16, 8)]  # (R, A, S) at the card's spacing
    assert finding.bbox_voxel == [[4, 8, 20], [8, 12, 24]]
    assert finding.center_voxel == [5.5, 9.5, 21.5]


def test_the_cards_box_mode_is_honoured():
    volume = blob_volume(blobs=BLOBS)
    standard = napari_medai.detect(volume, SPACING, model=box_model())
    centred = napari_medai.detect(volume, SPACING, model=box_model(BrightBlobDetector(unit(-300), "cccwhd"),
                                                                   box_mode="cccwhd"))
    assert [f.to_dict() for f in centred] == [f.to_dict() for f in standard]


def test_score_threshold_and_max_findings():
    volume = blob_volume(blobs=BLOBS)
    kept = napari_medai.detect(volume, SPACING, model=box_model(), score_threshold=unit(-100))
    assert [f.center_voxel for f in kept] == [[4.0, 8.0, 8.0], [10.0, 20.0, 20.0]]
    assert len(napari_medai.detect(volume, SPACING, model=box_model(), max_findings=1)) == 1


def test_a_segmentation_network_is_not_a_box_detector():
    model = box_model(ThresholdSegmenter())
    with pytest.raises(ModelError, match="is not a box detector"):
        napari_medai.detect(blob_volume(), SPACING, model=model)


def test_boxes_are_clipped_to_the_volume_and_boxes_outside_dropped():
    edges = np.array([[[-2.0, 0.0, 0.0], [2.0, 4.0, 4.0]],  # half outside along z
                      [[20.0, 0.0, 0.0], [22.0, 4.0, 4.0]]])  # entirely beyond the last slice
    (finding,) = boxes_to_findings(edges, np.array([0.9, 0.8]), SPACING, (16, 32, 32))
    assert finding.bbox_voxel == [[0, 0, 0], [2, 4, 4]]
    assert finding.center_voxel == [0.5, 1.5, 1.5]


def test_boxes_of_the_wrong_shape_are_refused():
    import torch

    class TwoDimensionalBoxes(torch.nn.Module):
        def forward(self, images):
            return [{"boxes": torch.zeros(3, 4), "labels": torch.zeros(3), "scores": torch.ones(3)}]

    with pytest.raises(ModelError, match=r"boxes of shape \(3, 4\)"):
        napari_medai.detect(blob_volume(), SPACING, model=box_model(TwoDimensionalBoxes()))


def _fixed_detector(box, score):
    """A detector returning one given box and score, whatever the image."""
    import torch

    class Fixed(torch.nn.Module):
        def forward(self, images):
            return [{"boxes": torch.tensor([box]), "labels": torch.zeros(1), "scores": torch.tensor([score])}]

    return Fixed()


@pytest.mark.parametrize("box, score, message", [
    ([math.nan, 3.0, 4.0, 6.0, 9.0, 10.0], 0.9, "NaN or infinite box corners or scores"),  # was a ValueError
    ([2.0, 3.0, 4.0, math.inf, 9.0, 10.0], 0.9, "NaN or infinite box corners or scores"),  # was clipped to the edge
    ([2.0, 3.0, 4.0, 6.0, 9.0, 10.0], math.nan, "NaN or infinite box corners or scores"),  # passed any threshold
    ([2.0, 3.0, 4.0, 6.0, 9.0, 10.0], 7.5, r"scores from 7.5 to 7.5, not probabilities in \[0, 1\]"),  # a logit
])
def test_non_finite_boxes_and_scores_out_of_range_are_refused(box, score, message):
    """An audit helper's findings: each became a traceback, a box to the volume's edge, or a
    finding reported at every threshold (a NaN score, written to JSON as NaN)."""
    with pytest.raises(ModelError, match=message):
        napari_medai.detect(blob_volume(), SPACING, model=box_model(_fixed_detector(box, score)), score_threshold=0.99)


def test_mirroring_a_box_detector_is_refused_and_auto_runs_it():
    from napari_medai.errors import InputError
    from napari_medai.inference import InferenceSettings

    for tta in ("mirror", "mirror-lesions"):
        with pytest.raises(InputError, match="returns boxes"):
            napari_medai.detect(blob_volume(blobs=BLOBS), SPACING, model=box_model(),
                                settings=InferenceSettings(tta=tta))
    assert len(napari_medai.detect(blob_volume(blobs=BLOBS), SPACING, model=box_model(),
                                   settings=InferenceSettings(tta="auto"))) == 3


def test_a_spacing_no_scan_has_is_refused_before_the_grid_is_allocated():
    from napari_medai.errors import InputError

    detector = BrightBlobDetector(threshold=unit(-300))
    model = box_model(detector, spacing=(2.0, 1.0, 1.0))
    with pytest.raises(InputError, match="check the spacing"):  # 18 GB a channel at the card's spacing
        napari_medai.detect(blob_volume(), (50.0, 50.0, 50.0), model=model)
    assert detector.input_shapes == []  # the network never ran
