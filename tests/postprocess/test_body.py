"""Body mask: lungs inside the body stay, 'lung' in the air under a blanket goes."""

import numpy as np
import pytest

from napari_medai.postprocess.body import body_mask, keep_inside_body


def _chest(n_z=6):
    """Air, a body ellipse with two lungs, and a 2 mm blanket 10 mm above the skin."""
    hu = np.full((n_z, 80, 100), -1000.0, np.float32)
    yy, xx = np.mgrid[:80, :100]
    body = ((yy - 45) / 25.0) ** 2 + ((xx - 50) / 40.0) ** 2 <= 1
    hu[:, body] = 40.0
    lungs = (((yy - 45) / 15.0) ** 2 + ((xx - 32) / 12.0) ** 2 <= 1) | (
        ((yy - 45) / 15.0) ** 2 + ((xx - 68) / 12.0) ** 2 <= 1)
    hu[:, lungs] = -850.0
    hu[:, 8:10, 5:95] = 0.0  # blanket
    hu[:, 10:19, 5:7] = 0.0  # a fold touching the skin would join it without the opening
    labels = np.zeros(hu.shape, np.uint8)
    labels[:, lungs] = 1
    labels[:, 11:18, 30:70] = 1  # the model's mistake: air under the blanket called lung
    return hu, labels, lungs


@pytest.mark.parametrize("pixel_mm", [1.0, 0.5])  # 0.5 mm: the mask is computed at 1.5 mm and upsampled
def test_body_encloses_the_lungs_but_not_the_air_under_a_blanket(pixel_mm):
    hu, labels, lungs = _chest()
    k = int(round(1.0 / pixel_mm))  # the same chest on a finer grid
    hu, labels, lungs = (np.repeat(np.repeat(a, k, -2), k, -1) for a in (hu, labels, lungs))
    body = body_mask(hu, (2.0, pixel_mm, pixel_mm))
    assert body.shape == hu.shape
    assert body[:, lungs].all()
    gap = np.s_[:, 11 * k : 18 * k, 20 * k : 80 * k]  # the air between skin and blanket
    assert not body[gap].any() and not body[:, 8 * k : 10 * k].any()
    cleaned, report = keep_inside_body(labels, body, [1])
    assert (cleaned[:, lungs] == 1).all() and not cleaned[gap].any()
    assert 0 < report[1] < 0.25
    assert labels[:, 11 * k : 18 * k, 30 * k : 70 * k].all()  # the input is not modified


def test_a_chest_cut_open_by_the_field_of_view_still_encloses_its_lungs():
    hu, labels, lungs = _chest()
    hu, labels, lungs = hu[:, :, 25:], labels[:, :, 25:], lungs[:, 25:]  # the edge cuts the left lung
    assert lungs[:, 0].any()
    body = body_mask(hu, (2.0, 1.0, 1.0))
    assert body[:, lungs].all() and not body[:, 11:18, 10:60].any()
    cleaned, report = keep_inside_body(labels, body, [1])
    assert (cleaned[:, lungs] == 1).all() and not cleaned[:, 11:18].any()


def test_empty_and_constant_images():
    assert not body_mask(np.full((3, 20, 20), -1000.0), (1, 1, 1)).any()
    out, report = keep_inside_body(np.zeros((3, 20, 20), np.uint8), np.zeros((3, 20, 20), bool), [1])
    assert report == {} and not out.any()


def test_clean_with_card_takes_the_image_or_a_precomputed_body():
    from napari_medai.postprocess.components import clean_with_card

    hu, labels, lungs = _chest()
    probs = np.stack([(labels == c).astype(np.float32) for c in range(3)])
    extra = {"inside_body": [1]}
    by_image = clean_with_card(labels, probs[2], (2.0, 1.0, 1.0), extra, image=hu)
    by_body = clean_with_card(labels, probs[2], (2.0, 1.0, 1.0), extra, body=body_mask(hu, (2.0, 1.0, 1.0)))
    np.testing.assert_array_equal(by_image, by_body)
    assert (by_image[:, lungs] == 1).all() and not by_image[:, 11:18].any()
    untouched = clean_with_card(labels, probs[2], (2.0, 1.0, 1.0), extra)  # no image: the rule cannot apply
    assert untouched[:, 11:18].any()
