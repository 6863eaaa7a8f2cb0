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
    # A bullous apex: under soft tissue (slice 0), the right lung's top two slices are small pieces
    # of pure air (-1000 HU, 144 and 324 mm², under the trachea's 800 mm² limit), the dome widening
    # into the lung below.  The trachea between the lungs is air on every slice.
    hu, lab, lumen = _chest()
    right = (slice(20, 100), slice(100, 150))
    hu[0][right], lab[0][right] = 40.0, 0
    for z, (h, w) in ((1, (20, 20)), (2, (30, 30))):
        hu[z][right], lab[z][right] = 40.0, 0
        hu[z, 50:50 + h, 110:110 + w] = -1000.0
        lab[z, 50:50 + h, 110:110 + w] = 1
    for flipped in (False, True):  # the apex at the first or the last slices: either way up
        h, lb, lm = (hu[::-1], lab[::-1], lumen) if flipped else (hu, lab, lumen)
        out = drop_extrapulmonary_air(lb, h, SPACING)
        np.testing.assert_array_equal(out[:, :, 100:], lb[:, :, 100:])  # the right lung stays, its air apex too
        assert not (out[:, lm] == 1).any()  # the trachea still goes


def test_a_lumen_is_not_an_apex_where_the_scan_ends():
    # With one or two slices the 5 mm look up or down reads the lumen's own air, or no slice
    hu, lab, lumen = _chest()
    for n in (1, 2):
        out = drop_extrapulmonary_air(lab[:n], hu[:n], SPACING)
        assert not (out[:, lumen] == 1).any()


def _dome(slice_mm, pixel_mm=(0.7, 0.7), flush=False):
    """A lung's top as a half-ellipsoid dome (60 x 40 x 30 mm semi-axes) under 10 mm of soft
    tissue, whose upper 8 mm is a bulla of pure air; a trachea of 8 mm radius beside it, all
    labelled lung.  ``flush``: the dome cut by the chest wall through its tip (its medial half)."""
    n = int(60 / slice_mm)
    z, y, x = np.meshgrid(np.arange(n) * slice_mm, np.arange(160) * pixel_mm[0], np.arange(200) * pixel_mm[1],
                          indexing="ij")
    lung = ((z - 70) / 60) ** 2 + ((y - 56) / 40) ** 2 + ((x - 70) / 30) ** 2 <= 1
    if flush:
        lung &= x <= 70
    hu = np.where(lung, -850.0, 40.0)
    hu[lung & (z < 18)] = -1000.0
    trachea = (y - 56) ** 2 + (x - 120) ** 2 <= 8 ** 2
    hu[trachea] = -1000.0
    return hu, (lung | trachea).astype(np.uint8), lung, trachea


@pytest.mark.parametrize("slice_mm", [1.25, 5.0])
@pytest.mark.parametrize("pixel_mm", [(0.7, 0.7), (0.6, 0.9)])
@pytest.mark.parametrize("flush", [False, True])
def test_a_bullous_dome_apex_stays_lung(slice_mm, pixel_mm, flush):
    # its top slices are small pieces below -950 HU, as a trachea's are; a dome flush with the
    # chest wall leaves no lung beside its tip either
    hu, lab, lung, trachea = _dome(slice_mm, pixel_mm, flush)
    for flipped in (False, True):
        h, lb, lg, tr = (x[::-1] for x in (hu, lab, lung, trachea)) if flipped else (hu, lab, lung, trachea)
        out = drop_extrapulmonary_air(lb, h, (slice_mm, *pixel_mm))
        assert (out[lg] == 1).all()
        assert not (out[tr] == 1).any()


def test_a_trachea_hugged_by_lung_still_goes():
    # Hyperinflated lungs 2 mm from a 20 mm trachea over most of its circumference: the trachea
    # is still air up and down, so it goes (the lungs around it are parenchyma and stay)
    yy, xx = np.mgrid[:200, :260]
    r = np.hypot((yy - 100) * 0.7, (xx - 130) * 0.7)
    lumen = r <= 10
    lungs = (r > 12) & (r < 60) & (np.abs(yy - 100) * 0.7 < 40)
    hu = np.where(lungs, -850.0, 40.0)
    hu[lumen] = -1000.0
    lab = np.repeat((lungs | lumen)[None], 12, 0).astype(np.uint8)
    hu = np.repeat(hu[None], 12, 0)
    out = drop_extrapulmonary_air(lab, hu, (2.5, 0.7, 0.7))
    assert not (out[:, lumen] == 1).any()
    assert (out[:, lungs] == 1).all()
