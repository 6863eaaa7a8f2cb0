"""When the body mask fails the lung (a crop of it: most of the lung lies outside the mask),
the body rule is skipped for the lung and for the nodules in it, and the detector's organ
field is not cut by it either."""

from __future__ import annotations

import numpy as np

from napari_medai.postprocess.components import clean_with_card
from napari_medai.postprocess.findings import organ_field

EXTRA = {"inside_body": [1, 2], "lesions": [2]}
SPACING = (2.0, 1.0, 1.0)


def _lung_with_a_nodule():
    labels = np.ones((6, 30, 30), np.uint8)  # the crop is all lung
    labels[2:5, 10:14, 10:14] = 2  # a nodule in it
    return labels


def test_a_body_mask_that_fails_the_lung_leaves_its_nodules_alone():
    labels = _lung_with_a_nodule()
    body = np.zeros(labels.shape, bool)
    body[:, :, :6] = True  # the mask holds a fifth of the lung: it failed (ORGAN_MAX_LOSS)
    out = clean_with_card(labels, None, SPACING, EXTRA, body=body)
    np.testing.assert_array_equal(out, labels)


def test_a_body_mask_that_holds_the_lung_still_cuts_nodules_outside_it():
    labels = _lung_with_a_nodule()
    body = np.ones(labels.shape, bool)
    body[:, 12:, 12:] = False  # a corner: a third of the lung and a quarter of the nodule
    out = clean_with_card(labels, None, SPACING, EXTRA, body=body)
    assert not out[~body].any()  # the lung and the nodule lost their voxels outside
    assert (out[2:5, 10:12, 10:12] == 2).all()


def _probs(shape=(6, 30, 30)):
    probs = np.zeros((3, *shape), np.float32)
    probs[1] = 1.0  # lung everywhere
    return probs


def test_the_organ_field_is_not_cut_by_a_body_mask_that_fails_it():
    body = np.zeros((6, 30, 30), bool)
    body[:, :, :6] = True
    assert organ_field(_probs(), [1], 2, body).all()


def test_the_organ_field_is_cut_by_a_body_mask_that_holds_it():
    body = np.ones((6, 30, 30), bool)
    body[:, :, 20:] = False
    np.testing.assert_array_equal(organ_field(_probs(), [1], 2, body), body)
