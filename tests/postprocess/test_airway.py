"""Air outside the lung field (trachea, bronchi, oesophagus) leaves the lung class."""

import numpy as np
import pytest

from napari_medai.postprocess.airway import drop_extrapulmonary_air
from napari_medai.postprocess.components import clean_with_card

SPACING = (5.0, 0.6, 0.6)  # lung1-like: 0.36 mm² pixels


def _chest():
    """Two parenchyma lungs (-850 HU), a trachea lumen between them (-1000 HU), all labelled lung."""
    hu = np.full((6, 120, 160), 40.0)  # soft tissue
    lab = np.zeros(hu.shape, np.uint8)
    for x0 in (10, 100):
        hu[:, 20:100, x0:x0 + 50] = -850.0
        lab[:, 20:100, x0:x0 + 50] = 1
    yy, xx = np.mgrid[:120, :160]
    lumen = (yy - 40) ** 2 + (xx - 80) ** 2 <= 12 ** 2  # 24 px = 14 mm across, ~160 mm²
    hu[:, lumen] = -1000.0
    lab[:, lumen] = 1
    return hu, lab, lumen


def test_a_small_air_lumen_labelled_lung_goes_back_to_background():
    hu, lab, lumen = _chest()
    out = drop_extrapulmonary_air(lab, hu, SPACING)
    assert not (out[:, lumen] == 1).any()
    np.testing.assert_array_equal(out[:, ~lumen], lab[:, ~lumen])  # both lungs untouched
    assert (lab[:, lumen] == 1).all()  # input untouched


def test_parenchyma_and_large_dark_lungs_stay():
    hu, lab, lumen = _chest()
    hu[:, lumen] = -850.0  # a small piece of parenchyma (an apex) is lung
    hu[0, 20:100, 10:60] = -980.0  # an emphysematous lung slice: dark, but far larger than a trachea
    out = drop_extrapulmonary_air(lab, hu, SPACING)
    np.testing.assert_array_equal(out, lab)


def test_a_lumen_touching_a_lung_on_its_slice_is_left_to_the_lung():
    hu, lab, lumen = _chest()
    lab[:, 38:42, 60:70] = 1  # a bronchus joins the lumen to the right lung: one 2D piece
    hu[:, 38:42, 60:70] = -1000.0
    out = drop_extrapulmonary_air(lab, hu, SPACING)
    assert (out[:, lumen] == 1).all()


def test_the_card_applies_it_only_with_the_image():
    hu, lab, lumen = _chest()
    extra = {"organs": {"1": 2}, "extrapulmonary_air": {"organ": 1}}
    assert not (clean_with_card(lab, None, SPACING, extra, image=hu)[:, lumen] == 1).any()
    # without the image there is nothing to read the air from: the labels stay as they were
    lab[2, 30:50, 59:69] = 1  # the lumen joins the right lung on one slice, so in 3D it is part of it
    kept = clean_with_card(lab, None, SPACING, extra)
    assert (kept[:, lumen] == 1).all()


def _trachea_joining_the_lung_below(surround_hu: float):
    """Slices 0-2: the lumen is a piece of its own; slices 3-5: an air bar joins it to the right
    lung, so there it is part of the lung's piece.  ``surround_hu`` fills 12-22 px around it
    on slices 3-5 (soft tissue for a trachea, parenchyma for an airway inside the lung)."""
    hu, lab, lumen = _chest()
    yy, xx = np.mgrid[:120, :160]
    r2 = (yy - 40) ** 2 + (xx - 80) ** 2
    around = (r2 > 12 ** 2) & (r2 <= 22 ** 2) & (xx >= 60) & (xx < 100)  # between the lungs
    hu[3:, around] = surround_hu
    lab[3:, 38:42, 60:70] = 1  # the bar, air labelled lung
    hu[3:, 38:42, 60:70] = -1000.0
    return hu, lab, lumen


def test_the_lumen_is_followed_down_where_it_joins_a_lung():
    hu, lab, lumen = _trachea_joining_the_lung_below(40.0)  # mediastinum around it
    out = drop_extrapulmonary_air(lab, hu, SPACING)
    assert not (out[:, lumen] == 1).any()  # on every slice, joined or not
    lungs = np.zeros(lab.shape, bool)
    lungs[:, 20:100, 10:60] = lungs[:, 20:100, 100:150] = True
    np.testing.assert_array_equal(out[lungs], lab[lungs])  # the lungs themselves stay


def test_an_airway_surrounded_by_parenchyma_is_lung_field_and_stays():
    hu, lab, lumen = _trachea_joining_the_lung_below(-850.0)
    out = drop_extrapulmonary_air(lab, hu, SPACING)
    assert not (out[:3, lumen] == 1).any()  # the pieces of pure air above still go
    assert (out[3:, lumen] == 1).all()  # where parenchyma encloses it, it is lung field


def test_air_pieces_are_those_whose_median_is_below_the_level():
    # the count shortcut must pick exactly the pieces ndimage.median picks, even-sized pieces
    # whose two middle values straddle the level included
    from scipy import ndimage

    from napari_medai.postprocess.airway import MAX_MEDIAN_HU, _air_pieces

    rng = np.random.default_rng(4)
    image = rng.normal(-930, 40, size=(64, 64)).astype(np.float32)
    pieces, n = ndimage.label(rng.random((64, 64)) < 0.45)
    image[pieces == 1] = -960.0
    image[pieces == 2] = -940.0
    candidates = np.arange(1, n + 1)
    medians = np.asarray(ndimage.median(image, pieces, candidates))
    expected = candidates[medians < MAX_MEDIAN_HU]
    assert 0 < expected.size < n  # some pieces of each kind
    np.testing.assert_array_equal(_air_pieces(image, pieces, candidates, MAX_MEDIAN_HU), expected)
    straddle = np.zeros((1, 4), np.int32) + 1
    assert _air_pieces(np.array([[-1000.0, -952.0, -949.0, -800.0]]), straddle, np.array([1]), -950.0).tolist() == [1]
    assert _air_pieces(np.array([[-1000.0, -951.0, -947.0, -800.0]]), straddle, np.array([1]), -950.0).tolist() == []


def test_an_emphysematous_apex_stays_lung_and_the_trachea_still_goes():
    # A bullous apex: the right lung's top two slices are small pieces of pure air (-1000 HU,
    # 144 and 324 mm², under the trachea's 800 mm² limit), the dome widening into the lung below.
    # The trachea between the lungs keeps its cross-section on every slice.
    hu, lab, lumen = _chest()
    right = (slice(20, 100), slice(100, 150))
    for z, (h, w) in ((0, (20, 20)), (1, (30, 30))):
        hu[z][right] = 40.0
        lab[z][right] = 0
        hu[z, 50:50 + h, 110:110 + w] = -1000.0
        lab[z, 50:50 + h, 110:110 + w] = 1
    out = drop_extrapulmonary_air(lab, hu, SPACING)
    apex = np.zeros(lab.shape, bool)
    apex[:, :, 100:] = True
    np.testing.assert_array_equal(out[apex], lab[apex])  # the whole right lung stays, its air apex too
    assert not (out[:, lumen] == 1).any()  # the trachea still goes


def test_a_lumen_is_not_an_apex_where_the_scan_ends():
    # With one or two slices the 10 mm comparison has no slice to read: the lumen goes as before.
    hu, lab, lumen = _chest()
    out = drop_extrapulmonary_air(lab[:2], hu[:2], SPACING)
    assert not (out[:, lumen] == 1).any()


@pytest.mark.parametrize("slice_mm", [1.25, 5.0])
def test_a_bullous_dome_apex_stays_lung(slice_mm):
    # A lung's top as a half-ellipsoid dome (60 x 40 x 30 mm semi-axes) whose upper 8 mm is a
    # bulla of pure air: its top slices are small pieces below -950 HU, as a trachea's are.
    spacing = (slice_mm, 0.7, 0.7)
    z, y, x = np.meshgrid(np.arange(int(50 / slice_mm)) * slice_mm, np.arange(160) * 0.7, np.arange(200) * 0.7,
                          indexing="ij")
    lung = ((z - 60) / 60) ** 2 + ((y - 56) / 40) ** 2 + ((x - 70) / 30) ** 2 <= 1
    hu = np.where(lung, -850.0, 40.0)
    hu[lung & (z < 8)] = -1000.0
    trachea = (y - 56) ** 2 + (x - 120) ** 2 <= 8 ** 2
    hu[trachea] = -1000.0
    lab = (lung | trachea).astype(np.uint8)
    out = drop_extrapulmonary_air(lab, hu, spacing)
    assert (out[lung] == 1).all()
    assert not (out[trachea] == 1).any()
