"""``detect`` takes detectors only: a plain segmentation card or bundle names no lesion channel,
and its last class was reported as lung nodules with Lung-RADS categories (a spleen bundle gave a
77 mm "finding 1 ... Lung-RADS 4B").  A detector card (``extra.method``) and a box-detection
bundle still run."""

from __future__ import annotations

import pytest
from fixed_rule_models import ThresholdSegmenter, blob_volume, detection_card, install, segmentation_card, write_bundle

import napari_medai
from napari_medai.api import _model
from napari_medai.errors import ModelError

SPACING = (2.0, 1.0, 1.0)
REFUSED = r"is a segmentation model, not a detector: detection takes a detector card \(extra\.method"


def test_a_segmentation_card_is_refused_by_detect(tmp_path):
    model = str(install(segmentation_card(name="seg"), tmp_path))
    with pytest.raises(ModelError, match=REFUSED):
        napari_medai.detect(blob_volume(), SPACING, model=model)
    # the widget, screening, batch and evaluation ask for their detector the same way
    with pytest.raises(ModelError, match=REFUSED):
        _model(model, "detection")


@pytest.mark.filterwarnings("ignore::napari_medai.models.bundle.BundleTrustWarning")
def test_a_segmentation_bundle_is_refused_by_detect(tmp_path):
    folder = write_bundle(tmp_path / "spleen", {"_target_": "fixed_rule_models.ThresholdSegmenter"},
                          ThresholdSegmenter().state_dict())
    with pytest.raises(ModelError, match=REFUSED):
        napari_medai.detect(blob_volume(), SPACING, model=str(folder))
    napari_medai.segment(blob_volume(), SPACING, model=str(folder))  # still a segmentation model


def test_a_detector_card_still_detects(tmp_path):
    card = detection_card(name="det")
    assert card.extra["method"] == "segmentation"
    assert napari_medai.detect(blob_volume(blobs=((4, 8, 8, 2, 200.0),)), SPACING, model=str(install(card, tmp_path)))


def test_a_detection_card_that_names_no_method_is_a_segmentation_based_detector(tmp_path):
    """ModelCard.draws_boxes takes "segmentation" as the default method: a user's detection card
    without extra.method worked before the check above and must still work."""
    card = detection_card(name="det-no-method")
    del card.extra["method"]
    assert card.task == "detection" and not card.draws_boxes
    found = napari_medai.detect(blob_volume(blobs=((4, 8, 8, 2, 200.0),)), SPACING, model=str(install(card, tmp_path)))
    assert found
